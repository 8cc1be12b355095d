"""What change tracking costs: bulk writes with the history triggers against the same writes with
them disabled (the floor), and a bbox read of the layer as of a past moment against the current one.

Runs in a scratch database created next to the configured one (and dropped after), so a running
server is never blocked. Writes go through `layers.store.merge`, the ETL's own path.

    .venv/bin/python -m bench.tracking --rows 100000 --rounds 3 --runs 15
"""

import statistics
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import shapely
import typer
from sqlalchemy import create_engine, func, select, text

from layers.catalog import get_layer
from layers.store import merge
from layers.tables import bbox_filter, source
from twin.db import database_url, migrate

SCRATCH = "twin_bench_tracking"
LAYER = get_layer("city_components")
BOX = (120.40, 31.50, 120.45, 31.55)


def _frame(rows: int, status: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f.name: pd.Series([None] * rows, dtype=object) for f in LAYER.fields})
    frame["code"] = [f"320214{i:010d}" for i in range(rows)]
    frame["status"] = status
    frame["geom"] = shapely.points(rng.uniform(120.33, 120.57, rows), rng.uniform(31.46, 31.61, rows))
    return frame


def _timed(engine, work) -> float:
    start = time.perf_counter()
    with engine.begin() as conn:
        work(conn)
    return time.perf_counter() - start


def _writes(engine, rows: int, tracked: bool) -> dict[str, float]:
    """Seconds to insert, update and delete `rows` features, with or without the triggers."""
    switch = "ENABLE" if tracked else "DISABLE"
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {LAYER.table} {switch} TRIGGER USER"))
    times = {"insert": _timed(engine, lambda conn: merge(conn, LAYER, _frame(rows, "完好", 1))),
             "update": _timed(engine, lambda conn: merge(conn, LAYER, _frame(rows, "破损", 1))),
             "delete": _timed(engine, lambda conn: conn.execute(text(f"DELETE FROM {LAYER.table}")))}
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {LAYER.table} ENABLE TRIGGER USER"))
    return times


def _reads(engine, rows: int, rounds: int, runs: int) -> list[tuple[str, int, float]]:
    """Median ms of a bbox count now and as of moments, after `rounds` full updates built the history."""
    moments = []
    for n in range(rounds + 1):
        with engine.begin() as conn:
            merge(conn, LAYER, _frame(rows, f"状态{n}", n))
        moments.append(datetime.now(timezone.utc))
    with engine.begin() as conn:
        conn.execute(text(f"ANALYZE {LAYER.table}; ANALYZE history.{LAYER.id}"))
    cases = [("current", None), ("as of the first load", moments[0]), ("as of the middle", moments[rounds // 2]),
             ("as of the last update", moments[-1])]
    results = []
    with engine.connect() as conn:
        for name, moment in cases:
            layer = source(LAYER, moment)
            query = select(func.count()).select_from(layer).where(bbox_filter(layer.c.geom, BOX))
            count = conn.execute(query).scalar()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                conn.execute(query).scalar()
                times.append((time.perf_counter() - start) * 1000)
            results.append((name, count, statistics.median(times)))
    return results


def main(rows: int = typer.Option(100_000, min=1000, help="features written per case"),
         rounds: int = typer.Option(3, min=1, help="full updates before the as-of reads (history depth)"),
         runs: int = typer.Option(15, min=1, help="timed runs per read")) -> None:
    base = database_url()
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{SCRATCH}"')
    url = f"{base.rsplit('/', 1)[0]}/{SCRATCH}"
    try:
        migrate(url=url)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                               connect_args={"options": "-c timezone=UTC"})
        floor, tracked = _writes(engine, rows, tracked=False), _writes(engine, rows, tracked=True)
        print(f"bulk writes of {rows} city components through layers.store.merge (seconds)")
        for step in ("insert", "update", "delete"):
            print(f"  {step:6}  untracked {floor[step]:6.2f}   tracked {tracked[step]:6.2f}   "
                  f"x{tracked[step] / floor[step]:.2f}   ({rows / tracked[step]:,.0f} rows/s tracked)")
        print(f"bbox {BOX} count on {rows} features with {rounds} superseded versions each (median ms)")
        for name, count, ms in _reads(engine, rows, rounds, runs):
            print(f"  {name:24} {count:6} features  {ms:8.1f} ms")
        engine.dispose()
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


if __name__ == "__main__":
    typer.run(main)
