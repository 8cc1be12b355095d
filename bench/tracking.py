"""What change tracking costs: bulk writes with the history triggers against the same writes with
them disabled (the floor), side by side in databases migrated to each of `--revisions` (by default
0006, the full change log of migration 0003, and head, the lean one of 0007); and a bbox read of the
layer as of a past moment against the current one, with and without migration 0011's index on
`updated_at` (dropped in a transaction that is rolled back), interleaved.

Runs in scratch databases created next to the configured one (and dropped after), so a running server
is never blocked. Writes go through `layers.store.merge`, the ETL's own path. The as-of read runs on
`--as-of-features` features with `--versions` versions each, written straight into the layer and its
history by SQL with the triggers off (their validity ranges, and their order in the table, as the
triggers would have set them: each version's rows together, as one bulk update supersedes them;
`--interleaved` puts each feature's versions together instead), then indexed and analysed.

    .venv/bin/python -m bench.tracking --rows 100000 --repeat 3 --as-of-features 1000000 --versions 10
    .venv/bin/python -m bench.tracking --rows 100000 --revisions 0010,head   # the cost of 0011's index
"""

import os
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import shapely
import typer
from sqlalchemy import create_engine, func, select, text

from layers.catalog import get_layer
from layers.store import merge
from layers.tables import bbox_filter, layer_at
from twin.db import database_url, migrate

LAYER = get_layer("city_components")
BOX = (120.40, 31.50, 120.45, 31.55)
OURS = ("begin_change", "refuse_truncate", "stamp_insert", "bump_version", "record_insert", "record_update",
        "record_delete")
AS_OF_INDEX = "layers.city_components_updated_at_idx"  # migration 0011
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _frame(rows: int, status: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f.name: pd.Series([None] * rows, dtype=object) for f in LAYER.fields})
    frame["code"] = [f"320214{i:010d}" for i in range(rows)]
    frame["status"] = status
    frame["geom"] = shapely.points(rng.uniform(120.33, 120.57, rows), rng.uniform(31.46, 31.61, rows))
    return frame


def _backend_cpu(pid: int) -> float:
    """Seconds of CPU the server process `pid` has used (the managed cluster runs on this machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(engine, work) -> tuple[float, float]:
    """Wall seconds of `work` in one transaction, and the server CPU seconds it took (steadier under load)."""
    start = time.perf_counter()
    with engine.begin() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        cpu = _backend_cpu(pid)
        work(conn)
        cpu = _backend_cpu(pid) - cpu
    return time.perf_counter() - start, cpu


def _triggers(conn, enabled) -> None:
    """Enable the named user triggers of the layer, disable the others."""
    names = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) "
                              "AND NOT tgisinternal"), {"t": LAYER.table}).scalars().all()
    for name in names:
        switch = "ENABLE" if name in enabled else "DISABLE"
        conn.execute(text(f'ALTER TABLE {LAYER.table} {switch} TRIGGER "{name}"'))


def _writes(engine, rows: int, enabled) -> dict[str, tuple[float, float]]:
    """(wall, server CPU) seconds to insert, update and delete `rows` features with the `enabled` triggers on."""
    with engine.begin() as conn:
        _triggers(conn, enabled)
    times = {"insert": _timed(engine, lambda conn: merge(conn, LAYER, _frame(rows, "完好", 1))),
             "update": _timed(engine, lambda conn: merge(conn, LAYER, _frame(rows, "破损", 1))),
             "delete": _timed(engine, lambda conn: conn.execute(text(f"DELETE FROM {LAYER.table}")))}
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {LAYER.table} ENABLE TRIGGER USER"))
    return times


def _versions(engine, features: int, versions: int, interleaved: bool) -> list[datetime]:
    """`features` components with `versions` versions each (version k valid from START + k hours)."""
    hour = "interval '1 hour'"
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text(f"ALTER TABLE {LAYER.table} DISABLE TRIGGER USER"))
        conn.execute(text("DROP INDEX history.city_components_fid_idx, history.city_components_valid_idx"))
        conn.execute(text(
            f"INSERT INTO {LAYER.table} (code, status, geom, version, updated_at) "
            "SELECT format('320214%s', lpad(i::text, 10, '0')), '完好', "
            "ST_Point(120.33 + 0.24 * random(), 31.46 + 0.15 * random(), 4490), :v, :start + :v * " + hour +
            " FROM generate_series(1, :n) i"), {"n": features, "v": versions, "start": START})
        conn.execute(text(
            "INSERT INTO history.city_components (fid, code, status, geom, version, updated_at, valid) "
            f"SELECT c.fid, c.code, format('状态%s', k), c.geom, k, :start + k * {hour}, "
            f"tstzrange(:start + k * {hour}, :start + (k + 1) * {hour}) "
            f"FROM generate_series(1, :v - 1) k, LATERAL (SELECT fid, code, geom FROM {LAYER.table}) c "
            + ("ORDER BY c.fid, k" if interleaved else "ORDER BY k, c.fid")),
            {"v": versions, "start": START})
        conn.execute(text("CREATE INDEX city_components_fid_idx ON history.city_components (fid, version)"))
        conn.execute(text("CREATE INDEX city_components_valid_idx ON history.city_components USING gist (valid, geom)"))
        conn.execute(text(f"ALTER TABLE {LAYER.table} ENABLE TRIGGER USER"))
        conn.execute(text(f"VACUUM ANALYZE {LAYER.table}"))
        conn.execute(text("VACUUM ANALYZE history.city_components"))
    return [START + timedelta(hours=k, minutes=30) for k in (1, versions // 2, versions - 1)]


def _reads(engine, moments: list[datetime], runs: int) -> list[tuple[str, int, float]]:
    """Median ms of the bbox count now and as of each moment, with and without the index on updated_at
    (dropped inside a transaction that is then rolled back), interleaved run by run."""
    cases = [("current", None)] + [(f"as of version {k}", m) for k, m in
                                   zip((1, "middle", "last superseded"), moments)]
    queries = []
    for name, moment in cases:
        layer = layer_at(LAYER, moment)
        query = select(func.count()).select_from(layer).where(bbox_filter(layer.c.geom, BOX))
        queries += [(name, query, True)] + ([(f"{name}, without 0011", query, False)] if moment else [])
    times = {name: [] for name, _, _ in queries}
    counts = {}
    with engine.connect() as conn:
        for run in range(runs + 1):  # the first run warms the cache and is not timed
            for name, query, indexed in queries:
                with conn.begin() as transaction:
                    if not indexed:
                        conn.execute(text(f"DROP INDEX {AS_OF_INDEX}"))
                    start = time.perf_counter()
                    counts[name] = conn.execute(query).scalar()
                    if run:
                        times[name].append((time.perf_counter() - start) * 1000)
                    transaction.rollback()
    return [(name, counts[name], statistics.median(times[name])) for name, _, _ in queries]


def _scratch(base: str, name: str, revision: str):
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{base.rsplit('/', 1)[0]}/{name}"
    migrate(revision, url=url)
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                         connect_args={"options": "-c timezone=UTC"})


def _drop(base: str, names) -> None:
    with psycopg.connect(base, autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(rows: int = typer.Option(100_000, min=0, help="features written per case (0: skip the writes)"),
         as_of_features: int = typer.Option(0, min=0, help="features for the as-of read (0: skip it)"),
         versions: int = typer.Option(10, min=3, help="versions per feature for the as-of read"),
         runs: int = typer.Option(15, min=1, help="timed runs per read"),
         repeat: int = typer.Option(3, min=1, help="rounds of the writes (medians are shown)"),
         revisions: str = typer.Option("0006,head", help="the writes in databases migrated to each of these"),
         interleaved: bool = typer.Option(False, help="as-of history with each feature's versions together")) -> None:
    base = database_url()
    schemas = {f"at {revision}": revision for revision in revisions.split(",")}
    names = {label: f"twin_bench_tracking_{revision}" for label, revision in schemas.items()}
    names["as of"] = "twin_bench_tracking_as_of"
    try:
        if rows:
            newest = list(schemas)[-1]
            engine = _scratch(base, names[newest], schemas[newest])
            with engine.connect() as conn:
                others = set(conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) "
                                               "AND NOT tgisinternal"), {"t": LAYER.table}).scalars()) - set(OURS)
            engine.dispose()
            cases = [("untracked", ()), ("tracked", OURS)] + ([("all triggers", OURS + tuple(others))] if others else [])
            runs_of = {}
            for _ in range(repeat):  # each case on a fresh database, cases and schemas interleaved
                for case, enabled in cases:
                    for label, revision in schemas.items():
                        engine = _scratch(base, names[label], revision)
                        runs_of.setdefault((label, case), []).append(_writes(engine, rows, enabled))
                        engine.dispose()
            results = {key: {step: [statistics.median(r[step][i] for r in runs) for i in (0, 1)] for step in runs[0]}
                       for key, runs in runs_of.items()}
            print(f"load average {os.getloadavg()[0]:.1f}; median of {repeat} rounds")
            print(f"bulk writes of {rows:,} city components through layers.store.merge (wall seconds, server CPU "
                  f"seconds; ratio = untracked / tracked, the throughput ratio)"
                  f"{'; other triggers: ' + ', '.join(others) if others else ''}")
            for label in schemas:
                floor = results[(label, "untracked")]
                for case, _ in cases[1:]:
                    times = results[(label, case)]
                    print(f"  {label} {case}: " + "   ".join(
                        f"{step} {floor[step][0]:.2f} → {times[step][0]:.2f} s ({floor[step][0] / times[step][0]:.2f}×), "
                        f"CPU {floor[step][1]:.2f} → {times[step][1]:.2f} s ({floor[step][1] / times[step][1]:.2f}×)"
                        for step in ("insert", "update", "delete")))
            _drop(base, names.values())
        if as_of_features:
            engine = _scratch(base, names["as of"], "head")
            start = time.perf_counter()
            moments = _versions(engine, as_of_features, versions, interleaved)
            print(f"built {as_of_features:,} features × {versions} versions in {time.perf_counter() - start:.0f} s")
            print(f"bbox {BOX} count, median of {runs} interleaved runs (ms), load average {os.getloadavg()[0]:.1f}")
            results = _reads(engine, moments, runs)
            now = results[0][2]
            for name, count, ms in results:
                print(f"  {name:44} {count:8,} features  {ms:8.1f} ms  ({ms / now:.2f}× current)")
            engine.dispose()
    finally:
        _drop(base, names.values())


if __name__ == "__main__":
    typer.run(main)
