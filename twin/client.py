"""A thin client of the OneMap Twin HTTP API for analysts, for what GDAL does not do.

Plain layers read best with GDAL's OGC API driver:
`geopandas.read_file("OAPIF:http://host:8000/collections/rivers")`. This client covers the rest:
layers as of a moment, the spatial queries, the change feed and the water-quality series, as
(Geo)DataFrames. It speaks HTTP only and asks for CRS84 (lon/lat); reproject with `.to_crs()`.

    from twin.client import Twin
    twin = Twin()  # TWIN_URL, or http://127.0.0.1:8000
    near = twin.within("pollution_sources", 500, of={"layer": "rivers", "where": {"name": "伯渎港"}})
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import geopandas as gpd
import httpx
import pandas as pd
import shapely.geometry

DEFAULT_URL = "http://127.0.0.1:8000"
CRS84 = "OGC:CRS84"
PAGE = 10_000


class TwinError(RuntimeError):
    """The server refused a request: its status, error code, description and where the problem is."""

    def __init__(self, status: int, code: str, description: str, where=None):
        super().__init__(f"{status} {code}: {description}" + (f" (at {where})" if where else ""))
        self.status, self.code, self.description, self.where = status, code, description, where


@dataclass
class Trace:
    """A river trace: the reaches walked, the pollution sources beside them and the stations on them."""
    start: dict
    length_m: float
    reaches: gpd.GeoDataFrame
    pollution_sources: gpd.GeoDataFrame
    monitoring_stations: gpd.GeoDataFrame


def frame(collection: dict) -> gpd.GeoDataFrame:
    """A GeoJSON FeatureCollection in CRS84 as a GeoDataFrame, the feature ids as column `fid`."""
    features = collection["features"]
    gdf = gpd.GeoDataFrame.from_features(features, crs=CRS84)
    gdf.insert(0, "fid", [f.get("id") for f in features])
    return gdf


def _moment(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _box(bbox) -> str | None:
    return None if bbox is None else ",".join(str(v) for v in bbox)


class Twin:
    def __init__(self, url: str | None = None, timeout: float = 120.0, page_size: int = PAGE):
        self.url = (url or os.environ.get("TWIN_URL") or DEFAULT_URL).rstrip("/")
        self.page_size = page_size
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **params) -> dict:
        return self._answer(self.http.get(path, params={k: v for k, v in params.items() if v is not None}))

    def pages(self, path: str, **params) -> Iterator[dict]:
        """Each page of a listing, following its `next` links to the end. A next link is fetched as it is:
        it carries the query, and passing even an empty `params` would replace that query."""
        page = self.get(path, **params)
        while True:
            yield page
            link = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
            if link is None:
                return
            page = self._answer(self.http.get(link))

    def post(self, path: str, body: dict) -> dict:
        return self._answer(self.http.post(path, json={k: v for k, v in body.items() if v is not None}))

    @staticmethod
    def _answer(response: httpx.Response) -> dict:
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = {"code": "http_error", "description": response.text[:500]}
            raise TwinError(response.status_code, body.get("code", "http_error"), body.get("description", ""),
                            body.get("where"))
        return response.json()

    # -- layers now or as of a moment ----------------------------------------------
    def features(self, layer: str, *, as_of: datetime | str | None = None, bbox=None, filter: str | None = None,
                 datetime: str | None = None) -> gpd.GeoDataFrame:
        """Every feature of a layer (optionally within a lon/lat bbox, matching a CQL2 filter), now or
        exactly as it was at `as_of`; pages are followed to the end."""
        pages = self.pages(f"/collections/{layer}/items", limit=self.page_size, as_of=_moment(as_of),
                           bbox=_box(bbox), filter=filter, datetime=datetime)
        return frame({"features": [f for page in pages for f in page["features"]]})

    # -- spatial queries ------------------------------------------------------------
    def query(self, name: str, **body) -> dict:
        """POST /query/<name> with `body` (None values left out); the answer as JSON."""
        if "as_of" in body:
            body["as_of"] = _moment(body["as_of"])
        return self.post(f"/query/{name}", body)

    def nearest(self, point, layers: list[str], k: int = 10, max_distance: float | None = None,
                as_of=None) -> gpd.GeoDataFrame:
        """The k features of each layer nearest to a lon/lat point, with `distance_m`."""
        return frame(self.query("nearest", point=list(point), layers=layers, k=k, max_distance=max_distance,
                                as_of=as_of))

    def within(self, layer: str, distance: float, *, geometry: dict | None = None, of: dict | None = None,
               as_of=None) -> gpd.GeoDataFrame:
        """Features of `layer` within `distance` metres of a GeoJSON geometry or of the features a selector
        `of={"layer": …, "where": {field: value(s)}}` picks, with `distance_m` to the nearest."""
        answer = self.query("within", layer=layer, distance=distance, geometry=geometry, of=of, as_of=as_of)
        gdf = frame(answer)
        gdf.attrs["selected"] = answer.get("selected")
        return gdf

    def intersects(self, geometry: dict, layers: list[str], group_by: dict | None = None,
                   as_of=None) -> gpd.GeoDataFrame:
        """Features of the layers in a polygon; the counts per layer and category are in `.attrs["summary"]`."""
        answer = self.query("intersects", geometry=geometry, layers=layers, group_by=group_by, as_of=as_of)
        gdf = frame(answer)
        gdf.attrs["summary"] = answer["summary"]
        return gdf

    def at(self, point, layers: list[str] | None = None, as_of=None) -> gpd.GeoDataFrame:
        """The polygons (districts, streets, grids …) containing a lon/lat point, with their geometries."""
        return frame(self.query("at", point=list(point), layers=layers, as_of=as_of, geometries=True))

    def aggregate(self, layer: str, by: str, group_by: str | None = None, sum: str | None = None,
                  as_of=None) -> gpd.GeoDataFrame:
        """The polygons of `by` with `layer` counted in each (`count`, `count:<value>` per group_by value,
        `sum` …); the group values are in `.attrs["groups"]`."""
        answer = self.query("aggregate", layer=layer, by=by, group_by=group_by, sum=sum, as_of=as_of)
        gdf = frame(answer)
        gdf.attrs["groups"] = answer["groups"]
        return gdf

    def trace(self, point, direction: str, distance: float, buffer: float = 500.0, snap: float | None = None,
              as_of=None) -> Trace:
        """The rivers up- or downstream of a lon/lat point, with the sources within `buffer` metres."""
        answer = self.query("trace", point=list(point), direction=direction, distance=distance, buffer=buffer,
                            snap=snap, as_of=as_of)
        return Trace(answer["start"], answer["length_m"], frame(answer["reaches"]),
                     frame(answer["pollution_sources"]), frame(answer["monitoring_stations"]))

    # -- history --------------------------------------------------------------------
    def changes(self, after: int = 0, layer: str | None = None) -> gpd.GeoDataFrame:
        """The change feed after change id `after`, oldest first, to its end: one row per change (id, layer,
        fid, operation, version, time, actor, run, changed, properties after, geometry after). Resume
        later from `.attrs["cursor"]`."""
        rows, cursor = [], after
        for page in self.pages("/changes", after=after, limit=self.page_size, layer=layer):
            rows += page["changes"]
            cursor = page["cursor"]
        return _changes(rows, cursor)

    def layer_changes(self, layer: str, *, since=None, until=None, operation: str | None = None,
                      actor: str | None = None, run: int | None = None, bbox=None) -> gpd.GeoDataFrame:
        """A layer's changes filtered by time, operation, actor (a prefix ending in *), ETL run or lon/lat box."""
        pages = self.pages(f"/collections/{layer}/changes", since=_moment(since), until=_moment(until),
                           operation=operation, actor=actor, run=run, bbox=_box(bbox), limit=self.page_size)
        rows = [change for page in pages for change in page["changes"]]
        return _changes(rows, rows[-1]["id"] if rows else None)

    # -- water quality ----------------------------------------------------------------
    def series(self, station: str, aggregate: str = "daily", datetime: str | None = None,
               as_of=None) -> pd.DataFrame:
        """A station's readings per day (or hour), China Standard Time: one row per period indexed by its
        start, with count, water_class (GB 3838, 6 = 劣Ⅴ), limiting and <parameter>_mean/_min/_max.
        The station and the parameters' titles and units are in `.attrs`."""
        body = self.get("/collections/water_quality/series", station=station, aggregate=aggregate,
                        datetime=datetime, as_of=_moment(as_of))
        rows = []
        for period in body["periods"]:
            row = {"start": period["start"], "count": period["count"], "water_class": period.get("water_class"),
                   "limiting": period.get("limiting")}
            for name, stats in period["values"].items():
                row |= {f"{name}_{stat}": value for stat, value in stats.items()}
            rows.append(row)
        df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["start", "count", "water_class", "limiting"])
        df["start"] = pd.to_datetime(df["start"], utc=True).dt.tz_convert(body["timeZone"])
        df = df.set_index("start")
        df["water_class"] = df["water_class"].astype("Int64")
        df.attrs |= {"station": body["station"], "parameters": body["parameters"]}
        return df


def _changes(rows: list[dict], cursor) -> gpd.GeoDataFrame:
    records = [{"id": c["id"], "layer": c["layer"], "fid": c["fid"], "operation": c["operation"],
                "version": c["version"], "time": c["time"], "actor": c["actor"], "run": c["run"],
                "changed": c["changed"], "properties": (c["feature"] or {}).get("properties"),
                "geometry": (c["feature"] or {}).get("geometry")} for c in rows]
    df = pd.DataFrame(records, columns=["id", "layer", "fid", "operation", "version", "time", "actor", "run",
                                        "changed", "properties", "geometry"])
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    shapes = [None if g is None else shapely.geometry.shape(g) for g in df.pop("geometry")]
    gdf = gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(shapes, index=df.index, crs=CRS84))
    gdf.attrs["cursor"] = cursor
    return gdf
