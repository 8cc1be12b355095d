"""Helpers for the tile tests: tile math done independently of the server (morecantile + pyproj)."""

import time

import mapbox_vector_tile
import morecantile
from pyproj import Transformer
from sqlalchemy import text

MERCATOR = morecantile.tms.get("WebMercatorQuad")
TO_MERCATOR = Transformer.from_crs(4490, 3857, always_xy=True)
EXTENT, BUFFER = 4096, 64


def decode(data: bytes) -> dict:
    """layer → features, with tile coordinates as stored (y down)."""
    return {name: layer["features"] for name, layer in
            mapbox_vector_tile.decode(data, default_options={"y_coord_down": True}).items()}


def mercator_tile(lon: float, lat: float, z: int) -> morecantile.Tile:
    return MERCATOR.tile(lon, lat, z)


def buffered(bounds, margin: float = BUFFER / EXTENT):
    left, bottom, right, top = bounds
    pad = (right - left) * margin
    return left - pad, bottom - pad, right + pad, top + pad


def points(engine, layer: str, where: str = "TRUE") -> dict[int, tuple[float, float]]:
    """fid → (lon, lat) of a point layer, straight from the table."""
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT fid, ST_X(geom), ST_Y(geom) FROM layers.{layer} WHERE {where}")).all()
    return {fid: (x, y) for fid, x, y in rows}


def in_mercator_box(pts: dict[int, tuple[float, float]], box) -> set[int]:
    left, bottom, right, top = box
    inside = set()
    for fid, (lon, lat) in pts.items():
        x, y = TO_MERCATOR.transform(lon, lat)
        if left <= x <= right and bottom <= y <= top:
            inside.add(fid)
    return inside


def tile_url(layer: str, tile: morecantile.Tile, tms: str = "WebMercatorQuad") -> str:
    return f"/collections/{layer}/tiles/{tms}/{tile.z}/{tile.y}/{tile.x}"


def wait_for(check, seconds: float = 10.0, every: float = 0.1):
    """Poll `check()` until it returns something truthy; the last value otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
