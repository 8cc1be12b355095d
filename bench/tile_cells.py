"""Cluster tiles of city components summed from twin.tile_cell at level 19 (migration 0010) against the
same tiles at 0009 (level-17 cells up to z13, then clustering the points) and clustered from the points,
side by side in one run: the tile SQL of tiles.plans run by psycopg on one connection with the server's
session options, each tile's median of `--rounds`. At zooms with more than `--sample` tiles over the
district, the densest ones. The 0009 column needs a copy of twin.tile_cell at level 17, `--level17`
(made on a scratch database at 0009: `CREATE TABLE public.tile_cell_17 AS SELECT * FROM twin.tile_cell`
plus its primary key); without it that column is left out.

`writes`: what the cell triggers cost a bulk insert, update and delete of `--rows` components (positions of
existing ones, so cells are as the layer's), with the cells at level 17, at level 19, and with the three
cell triggers disabled, side by side, in all and in the cell triggers alone; each statement in a transaction that first sets the trigger function
and the counts to its level (migration 0010's SQL), timed alone, then rolled back (and vacuumed).

    TWIN_DATA_DIR=/tmp/cells-var .venv/bin/python -m bench.tile_cells tiles --level17 public.tile_cell_17
    TWIN_DATA_DIR=/tmp/cells-var .venv/bin/python -m bench.tile_cells writes --rows 200000
"""

import importlib.util
import os
import statistics
import time
from pathlib import Path

import morecantile
import psycopg
import typer
from sqlalchemy import Column, Table

import tiles.sources
from layers.catalog import catalog, get_layer, install
from tiles.plans import compile_plan
from tiles.settings import tile_settings
from tiles.sources import CELL_LEVEL, TILE_CELL, LayerRequest
from tiles.tms import address
from twin.db import database_url, session_options
from twin.settings import get_settings

app = typer.Typer(add_completion=False)

MERCATOR = morecantile.tms.get("WebMercatorQuad")
DISTRICT = (120.33, 31.46, 120.57, 31.61)


def use(cells: Table | None, level: int = CELL_LEVEL) -> None:
    """Tiles from these cells at this level, or (None) from the points."""
    spec = get_layer("city_components")
    install(catalog() | {spec.id: spec.model_copy(update={"cluster_counts": cells is not None})})
    tiles.sources.TILE_CELL, tiles.sources.CELL_LEVEL = (cells if cells is not None else TILE_CELL), level


def render(conn, tile) -> tuple[float, int]:
    """(ms, bytes) of the tile's city components with every field, as `use` set it."""
    spec, settings = get_layer("city_components"), tile_settings()
    plan = compile_plan([LayerRequest(spec, tuple(f.name for f in spec.fields))], tile, settings)
    start = time.perf_counter()
    data = psycopg.RawCursor(conn).execute(plan.sql, plan.params(tile, settings), binary=True).fetchone()[0]
    return (time.perf_counter() - start) * 1000, len(data or b"")


def densest(conn, z: int, sample: int) -> list:
    """The district's tiles at zoom z, the `sample` holding most points when there are more."""
    over = [address("WebMercatorQuad", t.z, t.x, t.y) for t in MERCATOR.tiles(*DISTRICT, [z])]
    if len(over) <= sample:
        return over
    shift = CELL_LEVEL - z
    rows = conn.execute(f"SELECT cx >> {shift}, cy >> {shift} FROM twin.tile_cell WHERE layer = 'city_components' "
                        f"GROUP BY 1, 2 ORDER BY sum(points) DESC LIMIT {sample}").fetchall()
    return [address("WebMercatorQuad", z, x, y) for x, y in rows]


@app.command("tiles")
def tile_times(zooms: str = typer.Option("6,8,10,12,14,15", help="zooms, tiles over the district"),
         rounds: int = typer.Option(3, min=1), sample: int = typer.Option(10, min=1),
         level17: str = typer.Option("", help="schema.table: twin.tile_cell's rows at level 17")) -> None:
    variants = {"cells": (TILE_CELL, CELL_LEVEL)}
    if level17:
        schema, name = level17.split(".")
        variants["0009"] = (Table(name, TILE_CELL.metadata, *(Column(c.name, c.type) for c in TILE_CELL.c), schema=schema), 17)
    variants["points"] = (None, CELL_LEVEL)
    print(f"load average {os.getloadavg()[0]:.1f}")
    with psycopg.connect(database_url(), autocommit=True, options=session_options(get_settings())) as conn:
        for z in (int(z) for z in zooms.split(",")):
            tiles_ = densest(conn, z, sample)
            line = f"z{z:<2} {len(tiles_):3} tiles"
            for label, (cells, level) in variants.items():
                use(cells, level)
                runs = [[render(conn, tile) for _ in range(rounds)] for tile in tiles_]
                ms = [statistics.median(ms for ms, _ in tile) for tile in runs]
                size = max(size for tile in runs for _, size in tile)
                line += f" | {label}: median {statistics.median(ms):7.1f} ms, max {max(ms):7.1f} ms, {size:>6} B max"
            print(line, flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


def finer_migration():
    """Migration 0010's module, for its trigger function and cell SQL at a level."""
    path = Path(__file__).resolve().parent.parent / "twin/migrations/versions/0010_tile_cells_finer.py"
    spec = importlib.util.spec_from_file_location("tile_cells_finer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRITES = {  # the moved rows: every fifth component, a different fifth per statement
    "insert": "INSERT INTO layers.city_components (code, status, geom) SELECT format('32021498%s', lpad(fid::text, "
              "8, '0')), status, ST_Point(ST_X(geom) + 1e-5, ST_Y(geom), 4490) FROM layers.city_components "
              "WHERE fid % 5 = 0 AND fid <= 5 * %(rows)s",
    "update": "UPDATE layers.city_components SET status = CASE status WHEN '完好' THEN '破损' ELSE '完好' END, "
              "geom = ST_Point(ST_X(geom) + 1e-3, ST_Y(geom), 4490) WHERE fid % 5 = 1 AND fid <= 5 * %(rows)s",
    "delete": "DELETE FROM layers.city_components WHERE fid % 5 = 2 AND fid <= 5 * %(rows)s",
}


def timed_write(conn, finer, operation: str, level: int | None, rows: int) -> tuple[float, float]:
    """Seconds of one write statement with the cells at `level` (None: cell triggers disabled), rolled back:
    in all, and in the cell triggers (EXPLAIN ANALYZE's trigger time)."""
    with conn.transaction(force_rollback=True):
        if level is None:
            conn.execute("ALTER TABLE layers.city_components DISABLE TRIGGER count_tile_cells_insert, "
                         "DISABLE TRIGGER count_tile_cells_update, DISABLE TRIGGER count_tile_cells_delete")
        else:
            conn.execute(finer.count_function(level))
            conn.execute("DELETE FROM twin.tile_cell WHERE layer = 'city_components'")
            conn.execute("INSERT INTO twin.tile_cell (layer, cx, cy, category, points, sum_x, sum_y) "
                         f"SELECT 'city_components', cx, cy, category, count(*), sum(x), sum(y) FROM (SELECT "
                         f"{finer.cell(level, 'p')} FROM (SELECT geom, coalesce(status, '') AS category "
                         "FROM layers.city_components WHERE geom IS NOT NULL) p) c (cx, cy, category, x, y) "
                         "GROUP BY cx, cy, category")
            conn.execute("ANALYZE twin.tile_cell")
        start = time.perf_counter()
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + WRITES[operation].replace("%(rows)s", str(rows)))
        took = time.perf_counter() - start
        triggers = plan.fetchone()[0][0].get("Triggers", [])
    # the rolled-back rows' dead tuples would slow the next run
    conn.execute("VACUUM layers.city_components, history.city_components, twin.change, twin.tile_cell")
    return took, sum(t["Time"] for t in triggers if t["Trigger Name"].startswith("count_tile_cells")) / 1000


@app.command()
def writes(rows: int = typer.Option(200_000, min=1), repeat: int = typer.Option(2, min=1)) -> None:
    finer, levels = finer_migration(), {"no cell triggers": None, "level 17": 17, "level 19": 19}
    print(f"load average {os.getloadavg()[0]:.1f}")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        for operation in WRITES:
            times = {label: [] for label in levels}
            for round_ in range(repeat):  # the order alternates between rounds
                for label, level in (levels.items() if round_ % 2 == 0 else reversed(levels.items())):
                    times[label].append(timed_write(conn, finer, operation, level, rows))
            print(f"{operation:6} " + " | ".join(
                f"{label}: median {statistics.median(a for a, _ in t):6.2f} s, cell triggers "
                f"{statistics.median(c for _, c in t):5.2f} s ({' '.join(f'{a:.2f}/{c:.2f}' for a, c in t)})"
                for label, t in times.items()), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    app()
