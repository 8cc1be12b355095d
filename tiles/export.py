"""The offline package: the vector layers of an area as one PMTiles archive (WebMercatorQuad, gzip MVT).

Each tile is the composite one-map tile the server would send (same SQL, clusters included), so
an offline map looks like the online one. PMTiles readers (MapLibre's pmtiles protocol, GDAL's
PMTiles driver) find the layers and their fields in the archive's metadata.
"""

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer
from sqlalchemy.engine import Engine

from layers.catalog import LayerSpec
from tiles.settings import tile_settings
from tiles.sources import LayerRequest, field_kinds, tile_statement
from tiles.tms import TileAddress, tile_range

TMS = "WebMercatorQuad"


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class ExportResult:
    tiles: int  # tiles with features, written
    visited: int  # tiles rendered
    bytes: int


def plan(bbox: tuple[float, float, float, float], minzoom: int, maxzoom: int) -> list[TileAddress]:
    """The tiles covering a lon/lat box at each zoom."""
    west, south, east, north = bbox
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ExportError(f"bbox must be west,south,east,north in degrees with west < east and south < north, "
                          f"not {bbox}")
    if not 0 <= minzoom <= maxzoom <= 22:
        raise ExportError(f"zooms must satisfy 0 <= minzoom <= maxzoom <= 22, not {minzoom}..{maxzoom}")
    tiles = []
    for z in range(minzoom, maxzoom + 1):
        x0, y0, x1, y1 = tile_range(TMS, z, bbox)
        tiles += [TileAddress(TMS, z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    return tiles


def export(engine: Engine, out: Path, bbox: tuple[float, float, float, float], minzoom: int, maxzoom: int,
           layers: list[LayerSpec], max_tiles: int = 50_000,
           progress: Callable[[int, int], None] = lambda done, total: None) -> ExportResult:
    if not layers:
        raise ExportError("no vector layers to export")
    tiles = plan(bbox, minzoom, maxzoom)
    if len(tiles) > max_tiles:
        raise ExportError(f"{len(tiles)} tiles is more than the limit of {max_tiles}: "
                          "narrow the bbox or the zooms (or raise the limit)")
    settings = tile_settings()
    written: list[tuple[int, bytes]] = []
    with engine.connect() as conn:
        for done, tile in enumerate(tiles, 1):
            visible = [LayerRequest(s, tuple(f.name for f in s.fields)) for s in layers
                       if s.minzoom <= tile.z <= s.maxzoom]
            if visible:
                data = conn.execute(tile_statement(visible, tile, settings)).scalar_one()
                if data:
                    written.append((zxy_to_tileid(tile.z, tile.x, tile.y), gzip.compress(bytes(data), mtime=0)))
            progress(done, len(tiles))
    if not written:
        raise ExportError("no features of those layers in that bbox at those zooms: nothing to write")
    written.sort()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as f:
        writer = Writer(f)
        for tile_id, data in written:
            writer.write_tile(tile_id, data)
        writer.finalize(_header(bbox, minzoom, maxzoom), _metadata(layers))
    partial.replace(out)
    return ExportResult(len(written), len(tiles), out.stat().st_size)


def _header(bbox, minzoom: int, maxzoom: int) -> dict:
    west, south, east, north = bbox
    return {"tile_type": TileType.MVT, "tile_compression": Compression.GZIP,
            "min_lon_e7": int(west * 1e7), "min_lat_e7": int(south * 1e7),
            "max_lon_e7": int(east * 1e7), "max_lat_e7": int(north * 1e7),
            "center_zoom": minzoom, "center_lon_e7": int((west + east) / 2 * 1e7),
            "center_lat_e7": int((south + north) / 2 * 1e7)}


def _metadata(layers: list[LayerSpec]) -> dict:
    return {"name": "OneMap Twin — 无锡新吴区一张图", "format": "pbf", "type": "overlay",
            "vector_layers": [{"id": s.id, "description": s.title.zh, "minzoom": s.minzoom, "maxzoom": s.maxzoom,
                               "fields": field_kinds(s)} for s in layers]}
