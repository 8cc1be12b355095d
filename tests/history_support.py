"""Helpers for the change-tracking tests: a private database with its own server (these tests write,
and other modules count features), department keys, generated pollution sources, snapshots of a
layer now or as of a moment, and a replica kept only by following the change feed."""

import csv
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import shapely
from shapely.geometry import shape
from sqlalchemy import func, select

from layers.catalog import get_layer
from layers.codes import credit_code_check_char
from layers.tables import layer_at
from tests.etl_support import drop_database, engine_for, private_database, serve
from twin.auth import create_key, revoke_key

LAYER = "pollution_sources"
SCRATCH = (120.90, 32.05, 120.99, 32.15)  # inside the plausible extent, away from the district
ECOLOGY = "生态环境局"


def credit_code(n: int) -> str:
    first = f"91320214{n:09d}"
    return first + credit_code_check_char(first)


def source_feature(n: int, lon: float, lat: float, name: str | None = None, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"credit_code": credit_code(n), "name": name or f"测试企业{n}",
                           "permit_class": "登记管理", "key_unit": False} | props}


def write_csv(path: Path, rows: list[dict]) -> Path:
    """A department's file: credit_code, name, permit_class, key_unit, lon, lat (floats written exactly)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["credit_code", "name", "permit_class", "key_unit", "lon", "lat"])
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"lon": repr(row["lon"]), "lat": repr(row["lat"])})
    return path


def _plain(value):
    """A stored value as it reads in JSON (dates and times as ISO text)."""
    return orjson.loads(orjson.dumps(value))


def snapshot(engine, layer: str = LAYER, as_of=None) -> dict[int, tuple[dict, bytes | None]]:
    """{fid: (properties, WKB)} of the layer now, or as it was at `as_of` (via layers.tables.layer_at)."""
    spec = get_layer(layer)
    src = layer_at(spec, as_of)
    geometry = [func.ST_AsBinary(src.c.geom).label("wkb")] if spec.geometry else []
    with engine.connect() as conn:
        rows = conn.execute(select(src.c.fid, *(src.c[f.name] for f in spec.fields), *geometry)).all()
    return {r.fid: ({f.name: _plain(r._mapping[f.name]) for f in spec.fields},
                    bytes(r.wkb) if spec.geometry else None) for r in rows}


class Replica:
    """Layer states rebuilt from nothing but the change feed, followed from change 0."""

    def __init__(self, client: httpx.Client, layer: str | None = None, page: int = 5000):
        self.client, self.layer, self.page = client, layer, page
        self.cursor = 0
        self.state: dict[tuple[str, int], tuple[dict, bytes | None]] = {}
        self.applied = 0

    def follow(self) -> None:
        params = {"after": self.cursor, "limit": self.page} | ({"layer": self.layer} if self.layer else {})
        url = "/changes"
        while url:
            response = self.client.get(url, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            for change in body["changes"]:
                assert change["id"] > self.cursor, "the feed went backwards"
                self.apply(change)
                self.cursor = change["id"]
            assert body["cursor"] == self.cursor
            url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
            params = None

    def apply(self, change: dict) -> None:
        key = (change["layer"], change["fid"])
        if change["operation"] == "delete":
            assert key in self.state, f"delete of {key}, which the feed never created"
            del self.state[key]
        else:
            assert (key in self.state) == (change["operation"] == "update"), change
            feature = change["feature"]
            wkb = shapely.to_wkb(shape(feature["geometry"])) if feature["geometry"] else None
            self.state[key] = (feature["properties"], wkb)
        self.applied += 1

    def layer_state(self, layer: str = LAYER) -> dict[int, tuple[dict, bytes | None]]:
        return {fid: value for (name, fid), value in self.state.items() if name == layer}


@contextmanager
def private_server(database_url: str, data_dir: Path, name: str):
    """(url, sync engine, base URL) of a fresh migrated database and a server on it."""
    url = private_database(database_url, name)
    engine = engine_for(url)
    try:
        with serve(url, data_dir) as base:
            yield url, engine, base
    finally:
        engine.dispose()
        drop_database(database_url, name)


def department_keys(engine) -> dict[str, str]:
    """Keys: ecology (writes pollution_sources), urban (city_components only), revoked (an ecology key)."""
    with engine.begin() as conn:
        keys = {"ecology": create_key(conn, ECOLOGY, [LAYER, "monitoring_stations", "water_quality"]),
                "urban": create_key(conn, "城管局", ["city_components"]),
                "revoked": create_key(conn, ECOLOGY, [LAYER])}
        revoke_key(conn, keys["revoked"].split("_")[1])
    return keys


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}
