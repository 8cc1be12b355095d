"""Drainage traces over a large network: pgRouting (as served, parts first) beside the recursive CTE and
beside pgRouting over the whole edge table, on the same graph.

A throwaway cluster in $TMPDIR/twin-bench-network (deleted afterwards unless --keep): the sample
district generated with --pipes pipes (default 1,000,000), loaded through the ETL jobs, the graph
built (layers.drainage_graph). Then, from random starts: upstream traces (the whole network upstream,
with distances) from manholes, pump stations and river stations; the recursive CTE's upstream
reachability (no distances) from the same starts; pgRouting on the whole edge table from a few manholes;
service areas of pump stations and pipes; downstream from manholes.

    nice .venv/bin/python -m bench.network_trace [--pipes 1000000] [--keep]
    nice .venv/bin/python -m bench.network_trace --reuse --keep   # again on a kept cluster (graph refreshed)
    nice .venv/bin/python -m bench.network_trace --pipes 50000 --as-of   # also `as_of` (a graph of the past)
    nice .venv/bin/python -m bench.network_trace --reuse --keep --no-traces --as-of   # `as_of` alone
    nice .venv/bin/python -m bench.network_trace --reuse --no-traces --as-of --turned 20000   # a large change

`--as-of` commits its changes to the cluster (five features a run; --turned more): measure on a kept
cluster first, and build it again after a run with --turned.
"""

import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import typer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

BENCH_DIR = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "twin-bench-network"
LOADS = [("rivers", "rivers", None), ("monitoring_stations", "monitoring_stations", None),
         ("pollution_sources", "pollution_sources", "GCJ02"), ("drainage_nodes", "manholes", None),
         ("drainage_nodes", "pump_stations", None), ("drainage_nodes", "treatment_plants", None),
         ("drainage_nodes", "outfalls", None), ("drainage_nodes", "gates", None), ("drainage_pipes", "pipes", None)]

CTE_UPSTREAM = """
WITH RECURSIVE up (node) AS (
    SELECT unnest(CAST(:starts AS bigint[]))
    UNION
    SELECT CASE WHEN e.target = up.node THEN e.source ELSE e.target END FROM twin.drainage_edge e
    JOIN up ON e.target = up.node OR (e.reverse_cost >= 0 AND e.source = up.node))
SELECT count(*) FROM up
"""
WHOLE_UPSTREAM = """
SELECT count(*) FROM pgr_drivingDistance(
    'SELECT id, target AS source, source AS target, cost, reverse_cost FROM twin.drainage_edge',
    CAST(:start AS bigint), 1e15)
"""


def build(pipes: int, log) -> str:
    from etl.run import run_file
    from etl.sample import generate
    from layers.drainage_graph import rebuild
    from twin.cluster import Cluster
    from twin.db import migrate, sync_engine

    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True)
    BENCH_DIR.chmod(0o755)
    started = time.perf_counter()
    files = generate(BENCH_DIR / "sample", components=20_000, days=1, pipes=pipes)
    log(f"generated the district with {pipes:,} pipes asked: {time.perf_counter() - started:.0f} s")
    cluster = Cluster(BENCH_DIR / "db")
    cluster.up()
    url = cluster.url()
    os.environ["TWIN_DATABASE_URL"] = url
    migrate(url=url)
    engine = sync_engine()
    for job, layer, crs in LOADS:
        started = time.perf_counter()
        result = run_file(engine, job, files[layer], layer=layer, crs=crs)
        log(f"loaded {layer}: {result.counts} {result.error or ''} ({time.perf_counter() - started:.0f} s)")
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        rebuild(conn)
    log(f"built the graph: {time.perf_counter() - started:.0f} s")
    return url


def _stats(name: str, times: list[float], extra: str = "") -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {p90:.0f} | {ms[-1]:.0f} | {extra} |"


async def measure(url: str, log) -> None:
    from layers import drainage_graph, drainage_layers, drainage_trace

    engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    pick = random.Random(22)
    started = time.perf_counter()
    async with engine.begin() as conn:  # a kept cluster's graph may be of an older form
        if await drainage_graph.refresh(conn):
            log(f"rebuilt the graph: {time.perf_counter() - started:.0f} s")
    async with engine.connect() as conn:
        await conn.execute(text("SET jit = off"))  # as the server's query snapshots do
        tables, layer = drainage_layers.now().layers, drainage_layers.layer_id
        counts = (await conn.execute(text(f"SELECT (SELECT count(*) FROM {tables['pipes']}), (SELECT count(*) FROM "
                                          "twin.drainage_edge), (SELECT count(*) FROM twin.drainage_node), "
                                          "(SELECT count(DISTINCT component) FROM twin.drainage_node)"))).one()
        log(f"pipes {counts[0]:,}, graph edges {counts[1]:,}, nodes {counts[2]:,}, parts {counts[3]:,}")

        async def fids(role: str, n: int) -> list[int]:
            every = (await conn.execute(text(f"SELECT fid FROM {tables[role]} ORDER BY fid"))).scalars().all()
            return pick.sample(list(every), min(n, len(every)))

        async def timed(kind: str, role: str, fid: int):
            started = time.perf_counter()
            reach = await getattr(drainage_trace, kind)(conn, layer(role), fid)
            return time.perf_counter() - started, reach

        rows = ["| trace | runs | p50 ms | p90 ms | max ms | features reached (median) |", "|---|---|---|---|---|---|"]
        manholes, pumps = await fids("manholes", 100), await fids("pump_stations", 60)
        stations, pipes = await fids("stations", 40), await fids("pipes", 60)
        for label, kind, role, chosen in (
                ("upstream from a manhole (pgRouting)", "upstream", "manholes", manholes),
                ("upstream from a pump station (pgRouting)", "upstream", "pump_stations", pumps),
                ("upstream from a river station (pgRouting)", "upstream", "stations", stations),
                ("downstream from a manhole (pgRouting, with the path)", "downstream", "manholes", manholes[:50]),
                ("service area of a pump station (pgRouting)", "service_area", "pump_stations", pumps[:30]),
                ("service area of a pipe (pgRouting)", "service_area", "pipes", pipes)):
            times, sizes = [], []
            for fid in chosen:
                try:
                    seconds, reach = await timed(kind, role, fid)
                except drainage_trace.NotOnNetwork:
                    continue
                times.append(seconds)
                sizes.append(sum(len(v) for v in reach.features.values()))
            rows.append(_stats(label, times, f"{statistics.median(sizes):.0f}"))
            log(rows[-1])
        for label, role, chosen in (("upstream from a manhole (recursive CTE, reachability only)", "manholes",
                                     manholes), ("upstream from a pump station (recursive CTE, reachability only)",
                                                 "pump_stations", pumps), (
                "upstream from a river station (recursive CTE, reachability only)", "stations", stations)):
            times, sizes = [], []
            for fid in chosen:
                starts = [drainage_layers.node_id(role, fid)]
                started = time.perf_counter()
                sizes.append((await conn.execute(text(CTE_UPSTREAM), {"starts": starts})).scalar())
                times.append(time.perf_counter() - started)
            rows.append(_stats(label, times, f"{statistics.median(sizes):.0f} nodes"))
            log(rows[-1])
        times = []
        for fid in manholes[:5]:
            started = time.perf_counter()
            await conn.execute(text(WHOLE_UPSTREAM), {"start": drainage_layers.node_id("manholes", fid)})
            times.append(time.perf_counter() - started)
        rows.append(_stats("upstream from a manhole (pgRouting over the whole edge table)", times))
        log(rows[-1])
    await engine.dispose()
    print("\n".join(rows))


# A few changes after the moment: a pipe deleted, one turned round, one added, a manhole renamed (its pipes
# join nothing), a pollution source moved (the river's links are made again).
CHANGES = ("DELETE FROM {pipes} WHERE fid = (SELECT min(fid) FROM {pipes})",
           "UPDATE {pipes} SET direction = '反向' WHERE fid = (SELECT min(fid) + 1 FROM {pipes})",
           "INSERT INTO {pipes} (code, kind, flow_type, from_code, to_code, geom) SELECT 'bench-' || code, kind, "
           "flow_type, to_code, from_code, geom FROM {pipes} WHERE fid = (SELECT max(fid) FROM {pipes})",
           "UPDATE {manholes} SET code = 'bench-' || code WHERE fid = (SELECT min(fid) + 500000 FROM {manholes})",
           "UPDATE {sources} SET geom = ST_Translate(geom, 0.001, 0) WHERE fid = (SELECT min(fid) FROM {sources})")


async def measure_as_of(url: str, log, turned: int = 0) -> None:
    """Traces `as_of` a moment before a few changes (CHANGES, committed with the graph now rebuilt after them,
    as a server does, and vacuumed: a kept cluster keeps them, five features of a million a run): the graph
    then built by undoing the changes from the graph now (layers.drainage_graph.build_at) and, beside it,
    built whole from the layers then (rebuild_at); then the same traces on each. `turned`: that many more
    pipes turned round (a change of a large part of the network)."""
    from layers import drainage_graph, drainage_layers, drainage_trace

    engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    tables, layer = drainage_layers.now().layers, drainage_layers.layer_id
    async with engine.begin() as conn:
        moment = (await conn.execute(text("SELECT now() - interval '1 second'"))).scalar()
    async with engine.begin() as conn:
        for change in CHANGES:
            await conn.execute(text(change.format(**tables)))
        if turned:
            await conn.execute(text(f"UPDATE {tables['pipes']} SET direction = '反向' WHERE fid IN "
                                    f"(SELECT fid FROM {tables['pipes']} ORDER BY fid DESC LIMIT :n)"), {"n": turned})
        started = time.perf_counter()
        await drainage_graph.refresh(conn)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE twin.drainage_node, twin.drainage_edge, twin.drainage_component_edge"))
    log(f"as_of: {len(CHANGES)} changes and {turned:,} pipes turned round, the graph now rebuilt after them and "
        f"vacuumed in {time.perf_counter() - started:.0f} s")
    async with engine.connect() as conn:
        starts = [(kind, role, fid) for kind, role in (
            ("upstream", "stations"), ("upstream", "pump_stations"), ("service_area", "pump_stations"),
            ("downstream", "manholes")) for fid in (await conn.execute(text(
                f"SELECT fid FROM {tables[role]} ORDER BY fid LIMIT 5"))).scalars()]
        for label, build in (("undone from the graph now", drainage_graph.build_at),
                             ("built whole", drainage_graph.rebuild_at)):
            await conn.rollback()  # each graph then in a transaction of its own, as the server's
            await conn.execute(text("SET LOCAL jit = off"))
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            started = time.perf_counter()
            past = await build(conn, moment)
            log(f"as_of: the graph then {label}: {time.perf_counter() - started:.2f} s")
            for kind, role, fid in starts:
                started = time.perf_counter()
                try:
                    reach = await getattr(drainage_trace, kind)(conn, layer(role), fid, network=past)
                except drainage_trace.NotOnNetwork:
                    continue
                log(f"as_of ({label}): {kind} from {role} {fid}: {(time.perf_counter() - started) * 1000:.0f} ms, "
                    f"{sum(len(v) for v in reach.features.values())} features")
            await conn.rollback()
    await engine.dispose()


def main(pipes: int = typer.Option(1_000_000, help="pipes in the generated network"),
         keep: bool = typer.Option(False, help="keep the cluster and files (re-run with --reuse)"),
         reuse: bool = typer.Option(False, help="measure on the cluster a --keep run left"),
         as_of: bool = typer.Option(False, help="also traces as of a moment before a few changes"),
         traces: bool = typer.Option(True, help="the traces on the network now (--no-traces: --as-of alone)"),
         turned: int = typer.Option(0, help="with --as-of: this many more pipes turned round after the moment")):
    from twin.cluster import Cluster

    log = lambda line: print(line, flush=True)  # noqa: E731
    if reuse:
        cluster = Cluster(BENCH_DIR / "db")
        cluster.up()
        url = cluster.url()
    else:
        url = build(pipes, log)
    try:
        if traces:
            asyncio.run(measure(url, log))
        if as_of:
            asyncio.run(measure_as_of(url, log, turned))
    finally:
        if not keep:
            Cluster(BENCH_DIR / "db").destroy()
            shutil.rmtree(BENCH_DIR, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
