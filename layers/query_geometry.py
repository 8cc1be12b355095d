"""Geometries in and out of the spatial queries: GeoJSON read and checked, the coordinate
systems a query may speak, distance tests in true metres, and features written as GeoJSON.

Distances are geodesic, on the ellipsoid (`geography`), never degrees. A geography test
cannot use the layers' GiST indexes on `geom`, so `near()` pairs it with an envelope test in
degrees that is a little wider than the distance wherever the geometries lie.
"""

from functools import cache

import numpy as np
import orjson
import pyproj
import shapely
from sqlalchemy import LargeBinary, and_, func, literal, select
from sqlalchemy.sql import ColumnElement

from layers.catalog import SRID, LayerSpec
from layers.crs import Crs, output
from twin.errors import ApiError

MAX_VERTICES = 10_000
GEOJSON_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                 "GeometryCollection"}
# Below one metre of latitude per 1/110,000 degree and of longitude per 1/(110,000 cos φ):
# dividing metres by these never gives a narrower envelope than the geodesic distance needs.
METRES_PER_DEGREE_FLOOR = 110_000.0


@cache
def _to_storage(srid: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(srid, SRID, always_xy=True)


def read_geometry(value, crs: Crs, where: str, kinds: set[str] | None = None) -> shapely.Geometry:
    """A GeoJSON geometry (or [x, y] for a point) in `crs` and its axis order, checked and converted
    to the storage CRS."""
    if isinstance(value, list):
        value = {"type": "Point", "coordinates": value}
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ApiError(400, "invalid_geometry", "Expected a GeoJSON geometry object with 'type' and 'coordinates'.",
                       where=where)
    kind = value["type"]
    if kind not in GEOJSON_TYPES:
        hint = " (send the feature's 'geometry' member)" if kind in ("Feature", "FeatureCollection") else ""
        raise ApiError(400, "invalid_geometry", f"{kind[:100]!r} is not a GeoJSON geometry type{hint}.", where=where)
    if kinds and kind not in kinds:
        raise ApiError(422, "wrong_geometry_type", f"Expected {' or '.join(sorted(kinds))}, got {kind}.", where=where)
    try:
        geom = shapely.force_2d(shapely.geometry.shape(value))
        if crs.northing_first:
            geom = shapely.transform(geom, lambda yx: yx[:, ::-1])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, shapely.errors.GEOSException) as e:
        raise ApiError(400, "invalid_geometry", f"Not a valid GeoJSON {kind}: {e}", where=where) from e
    if geom.is_empty:
        raise ApiError(400, "empty_geometry", f"The {kind} has no coordinates.", where=where)
    vertices = shapely.get_num_coordinates(geom)
    if vertices > MAX_VERTICES:
        raise ApiError(413, "geometry_too_large", f"The geometry has {vertices} vertices; at most {MAX_VERTICES} are "
                       "accepted. Simplify it first.", where=where)
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise ApiError(400, "invalid_coordinates", "Coordinates must be finite numbers (no NaN or Infinity).",
                       where=where)
    if crs.geographic and not _lonlat(coords):
        raise ApiError(400, "invalid_coordinates", f"Longitude/latitude out of range for {crs.uri} (axis order "
                       f"{'lat, lon' if crs.northing_first else 'lon, lat'}); projected coordinates need their "
                       "crs, e.g. crs=EPSG:4549.", where=where)
    if not geom.is_valid:
        raise ApiError(422, "invalid_geometry", f"Invalid {kind}: {shapely.is_valid_reason(geom)}.", where=where)
    if crs.srid == SRID:
        return geom
    transformer = _to_storage(crs.srid)
    stored = shapely.transform(geom, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    if not _lonlat(shapely.get_coordinates(stored)):
        raise ApiError(400, "invalid_coordinates", f"The coordinates lie outside the area of use of {crs.uri}.",
                       where=where)
    return stored


def _lonlat(coords: np.ndarray) -> bool:
    lon, lat = np.abs(coords[:, 0]), np.abs(coords[:, 1])
    return bool(np.isfinite(coords).all() and (lon <= 180).all() and (lat <= 90).all())


def bound(geom: shapely.Geometry) -> ColumnElement:
    """A checked geometry as a bound parameter in the storage CRS."""
    return func.ST_GeomFromWKB(literal(shapely.to_wkb(geom), LargeBinary), SRID)


def geodesic(geom) -> ColumnElement:
    return func.geography(geom)


def metres_between(a, b) -> ColumnElement:
    return func.ST_Distance(geodesic(a), geodesic(b))


def around(a, b, metres) -> ColumnElement:
    """The index test that keeps every `a` within `metres` of `b` (and some farther): envelopes
    overlapping in degrees; `a` should be an indexed column."""
    lat_margin = metres / METRES_PER_DEGREE_FLOOR
    widest = func.least(func.greatest(func.abs(func.ST_YMin(b)), func.abs(func.ST_YMax(b))) + lat_margin, 89.0)
    lon_margin = metres / (METRES_PER_DEGREE_FLOOR * func.cos(func.radians(widest)))
    return a.op("&&")(func.ST_Expand(b, lon_margin, lat_margin))


def near(a, b, metres) -> ColumnElement:
    """`a` within `metres` of `b` on the ellipsoid; `a` should be an indexed column."""
    return and_(around(a, b, metres), func.ST_DWithin(geodesic(a), geodesic(b), metres))


def geojson(geom, crs: Crs) -> ColumnElement:
    """GeoJSON text of a stored geometry in the answer's CRS and axis order."""
    return func.ST_AsGeoJSON(output(geom, crs), crs.decimals)


def feature_select(spec: LayerSpec, src, crs: Crs, geometries: bool, *extra):
    columns = [src.c.fid, *(src.c[f.name] for f in spec.fields)]
    if geometries:
        columns.append(geojson(src.c.geom, crs).label("geometry_json"))
    return select(*columns, *extra)


def feature(spec: LayerSpec, row, extra: tuple[str, ...] = ()) -> dict:
    values = row._mapping
    properties = {f.name: values[f.name] for f in spec.fields} | {"layer": spec.id}
    properties |= {name: values[name] for name in extra}
    shape = values.get("geometry_json")
    return {"type": "Feature", "id": values["fid"], "geometry": orjson.Fragment(shape) if shape else None,
            "properties": properties}


def collection(features: list[dict], **members) -> dict:
    return {"type": "FeatureCollection", "features": features, "numberReturned": len(features), **members}
