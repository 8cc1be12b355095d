"""Low-zoom cluster tiles of city components summed from twin.tile_cell against the same tiles clustered
from the points (migration 0008 before/after), side by side in one run: the tile SQL of tiles.plans run
by psycopg on one connection with the server's session options, each tile's median of `--rounds`.

    TWIN_DATA_DIR=/work/bench-var/var .venv/bin/python -m bench.tile_cells     # the 1M-component bench DB
"""

import os
import statistics
import time

import morecantile
import psycopg
import typer

import tiles.sources
from layers.catalog import get_layer
from tiles.plans import compile_plan
from tiles.settings import tile_settings
from tiles.sources import LayerRequest
from tiles.tms import address
from twin.db import database_url, session_options
from twin.settings import get_settings

MERCATOR = morecantile.tms.get("WebMercatorQuad")
DISTRICT = (120.33, 31.46, 120.57, 31.61)


def render(conn, tile, counted: bool) -> tuple[float, int]:
    """(ms, bytes) of the tile's city components with every field, from the cells or from the points."""
    tiles.sources.CELL_LAYERS = frozenset({"city_components"} if counted else ())
    spec, settings = get_layer("city_components"), tile_settings()
    plan = compile_plan([LayerRequest(spec, tuple(f.name for f in spec.fields))], tile, settings)
    start = time.perf_counter()
    data = conn.execute(plan.sql, plan.params(tile, settings), binary=True).fetchone()[0]
    return (time.perf_counter() - start) * 1000, len(data or b"")


def main(zooms: str = typer.Option("6,8,9,10,11,12", help="zooms, every tile over the district"),
         rounds: int = typer.Option(3, min=1)) -> None:
    print(f"load average {os.getloadavg()[0]:.1f}")
    with psycopg.connect(database_url(), autocommit=True, options=session_options(get_settings())) as conn:
        for z in (int(z) for z in zooms.split(",")):
            tiles_ = [address("WebMercatorQuad", t.z, t.x, t.y) for t in MERCATOR.tiles(*DISTRICT, [z])]
            line = f"z{z:<2} {len(tiles_):3} tiles"
            for counted, label in ((True, "cells"), (False, "points")):
                runs = [[render(conn, tile, counted) for _ in range(rounds)] for tile in tiles_]
                ms = [statistics.median(ms for ms, _ in tile) for tile in runs]
                size = max(size for tile in runs for _, size in tile)
                line += f" | {label}: median {statistics.median(ms):8.1f} ms, max {max(ms):8.1f} ms, {size:>7} B max"
            print(line, flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    typer.run(main)
