"""The observation store at scale: a year of 1,000 datastreams at 5 minutes (105 million observations).

    nice .venv/bin/python -m bench.observation_store [--datastreams 1000] [--days 365] [--runs 15] [--keep] [--reuse]

A throwaway cluster in $TMPDIR/twin-bench-store (deleted afterwards unless --keep; --reuse times the store a
--keep run left, without building it again), migrated to head. The observations are
generated in SQL (generate_series, in arrival order: time, then datastream) straight into each month's
partition table, which is then attached (its indexes built as the migration defines them); the hourly and
daily aggregates and the latest observations are then computed in bulk from the stored rows, as the
triggers would have kept them. Then, p50 of `--runs` (ms), each beside its SQL floor:

- one datastream's last 30 days raw: over /sta/v1.1 (`Datastreams(id)/Observations`, $filter on
  phenomenonTime, $top=10000, the most a page may hold: one request) and the SQL it needs;
- its year at daily resolution: the SQL over sensing.observation_daily (what a daily series reads), beside
  the same figures computed from the raw rows;
- the latest observation of every datastream: sensing.latest_observation, beside DISTINCT ON over raw rows;
- bytes on disk per observation (heap and indexes of the partitions), and of the aggregates.
"""

import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psycopg
import typer

from bench.tile_peers import KEEP_ALIVE, process
from tests.etl_support import empty_database
from twin.cli import uvicorn_argv
from twin.cluster import Cluster, free_port
from twin.db import migrate

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-store"
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SETTINGS = {"shared_buffers": "1GB", "maintenance_work_mem": "512MB", "wal_level": "minimal",
            "max_wal_senders": "0", "max_wal_size": "4GB", "checkpoint_timeout": "15min"}

METADATA = """
WITH thing AS (INSERT INTO sensing.thing (name, properties, department)
               VALUES ('bench', '{"hj212_mn": "BENCH-STORE"}', '生态环境局') RETURNING id),
     sensor AS (INSERT INTO sensing.sensor (name, department) VALUES ('bench sensor', '生态环境局') RETURNING id),
     prop AS (INSERT INTO sensing.observed_property (name, definition, department)
              VALUES ('溶解氧', 'urn:bench:do', '生态环境局') RETURNING id)
INSERT INTO sensing.datastream (id, name, unit_of_measurement, observation_type, thing_id, sensor_id,
                                observed_property_id, department)
SELECT n, 'bench ' || n, '{"name": "mg/L", "symbol": "mg/L", "definition": "http://unitsofmeasure.org"}',
       'http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement', thing.id, sensor.id, prop.id,
       '生态环境局'
FROM generate_series(1, %(streams)s) n, thing, sensor, prop
"""
# a dissolved-oxygen-like day cycle per datastream plus noise; ids in arrival order
MONTH = """
INSERT INTO sensing.{name} (id, datastream_id, phenomenon_time, result)
SELECT %(first_id)s + (row_number() OVER (ORDER BY t, ds)) - 1, ds, t,
       round((7 + 2 * sin(extract(epoch FROM t) / 13751 + ds) + random() * 0.4)::numeric, 2)::float8
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '5 minutes', interval '5 minutes') t,
     generate_series(1, %(streams)s) ds
"""
AGGREGATE = """
INSERT INTO sensing.observation_{table} AS a
SELECT datastream_id, date_trunc('{unit}', phenomenon_time, 'Asia/Shanghai'), count(result), min(result),
       max(result), sum(result)
FROM sensing.{name} GROUP BY 1, 2
ON CONFLICT (datastream_id, period_start) DO UPDATE SET count = a.count + excluded.count,
    min = least(a.min, excluded.min), max = greatest(a.max, excluded.max), sum = a.sum + excluded.sum
"""
LATEST = """
INSERT INTO sensing.latest_observation
SELECT DISTINCT ON (datastream_id) datastream_id, id, phenomenon_time, result, result_quality
FROM sensing.{name} ORDER BY datastream_id, phenomenon_time DESC
"""


def months(days: int) -> list[tuple[str, datetime, datetime]]:
    end, out, month = START + timedelta(days=days), [], START
    while month < end:
        following = (month + timedelta(days=32)).replace(day=1)
        out.append((f"observation_{month:%Y_%m}", month, min(following, end)))
        month = following
    return out


def build(url: str, streams: int, days: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(METADATA, {"streams": streams})
        first_id = 1
        for name, start, end in months(days):
            began = time.monotonic()
            with conn.transaction():  # made and filled in one transaction: wal_level minimal skips its WAL
                conn.execute(f"CREATE TABLE sensing.{name} (LIKE sensing.observation INCLUDING DEFAULTS)")
                written = conn.execute(MONTH.format(name=name), {"first_id": first_id, "start": start, "end": end,
                                                                 "streams": streams}).rowcount
            conn.execute(f"ALTER TABLE sensing.observation ATTACH PARTITION sensing.{name} "
                         f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            for table, unit in (("hourly", "hour"), ("daily", "day")):
                conn.execute(AGGREGATE.format(table=table, unit=unit, name=name))
            first_id += written
            print(f"  {name}: {written:,} rows in {time.monotonic() - began:.0f} s", flush=True)
        conn.execute(LATEST.format(name=months(days)[-1][0]))
        conn.execute("SELECT setval(pg_get_serial_sequence('sensing.observation', 'id'), %s)", [first_id])
        conn.execute("VACUUM ANALYZE sensing.observation")
        conn.execute("ANALYZE sensing.observation_hourly")
        conn.execute("ANALYZE sensing.observation_daily")
        conn.execute("ANALYZE sensing.latest_observation")
        return first_id - 1


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT last_value FROM pg_sequences WHERE schemaname || '.' || sequencename = "
                            "pg_get_serial_sequence('sensing.observation', 'id')").fetchone()[0] - 1


def sizes(url: str, observations: int) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        heap, indexes = conn.execute(
            "SELECT sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid)) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'sensing.observation'::regclass").fetchone()
        by_index = conn.execute(
            "SELECT regexp_replace(ic.relname, '^observation_\\d{4}_\\d{2}_', ''), sum(pg_relation_size(ic.oid)) "
            "FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid JOIN pg_class ic ON ic.oid = x.indexrelid "
            "WHERE i.inhparent = 'sensing.observation'::regclass GROUP BY 1 ORDER BY 1").fetchall()
        aggregates = conn.execute("SELECT pg_total_relation_size('sensing.observation_hourly') + "
                                  "pg_total_relation_size('sensing.observation_daily') + "
                                  "pg_total_relation_size('sensing.latest_observation')").fetchone()[0]
    out = {"heap": heap / observations, "indexes": indexes / observations,
           "total": (heap + indexes) / observations, "aggregates": aggregates / observations}
    out |= {f"  index {name}": size / observations for name, size in by_index}
    return out


def p50(call, runs: int) -> float:
    times = []
    for n in range(runs + 1):  # the first warms up
        start = time.perf_counter()
        call()
        if n:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def floors(url: str, stream: int, end: datetime, runs: int) -> dict[str, tuple[float, int]]:
    since, year = end - timedelta(days=30), end - timedelta(days=365)
    queries = {
        "last 30 days raw": ("SELECT id, phenomenon_time, result, result_quality FROM sensing.observation "
                             "WHERE datastream_id = %(s)s AND phenomenon_time >= %(since)s "
                             "ORDER BY phenomenon_time", {"s": stream, "since": since}),
        "year daily (aggregate)": ("SELECT period_start, count, min, max, sum / nullif(count, 0) "
                                   "FROM sensing.observation_daily WHERE datastream_id = %(s)s "
                                   "AND period_start >= %(year)s ORDER BY period_start", {"s": stream, "year": year}),
        "year daily (from raw rows)": ("SELECT date_trunc('day', phenomenon_time, 'Asia/Shanghai') d, count(result), "
                                       "min(result), max(result), avg(result) FROM sensing.observation "
                                       "WHERE datastream_id = %(s)s AND phenomenon_time >= %(year)s GROUP BY 1 "
                                       "ORDER BY 1", {"s": stream, "year": year}),
        "latest of every datastream": ("SELECT datastream_id, observation_id, phenomenon_time, result, "
                                       "result_quality FROM sensing.latest_observation", {}),
        "latest of every datastream (DISTINCT ON over raw rows of the last day)": (
            "SELECT DISTINCT ON (datastream_id) datastream_id, id, phenomenon_time, result FROM sensing.observation "
            "WHERE phenomenon_time >= %(day)s ORDER BY datastream_id, phenomenon_time DESC",
            {"day": end - timedelta(days=1)}),
    }
    out = {}
    with psycopg.connect(url) as conn:
        for name, (sql, args) in queries.items():
            rows = []
            out[name] = (p50(lambda: rows.append(len(conn.execute(sql, args).fetchall())), runs), rows[-1])
    return out


def over_http(base: str, stream: int, end: datetime, runs: int) -> tuple[float, int]:
    since = (end - timedelta(days=30)).isoformat().replace("+00:00", "Z")
    path = (f"/sta/v1.1/Datastreams({stream})/Observations?$filter=phenomenonTime ge {since}"
            "&$orderby=phenomenonTime&$top=10000&$select=id,phenomenonTime,result")
    responses = []
    with httpx.Client(base_url=base, timeout=120) as http:
        def call():  # the server's answer, read whole; the client's parsing of it is not timed
            responses.append(http.get(path))
        ms = p50(call, runs)
    assert all(r.status_code == 200 for r in responses), responses[-1].text[:300]
    return ms, len(orjson.loads(responses[-1].content)["value"])


def main(datastreams: int = typer.Option(1000), days: int = typer.Option(365),
         runs: int = typer.Option(15, help="runs of each query"),
         keep: bool = typer.Option(False, help="keep the cluster (to look at it); delete it yourself"),
         reuse: bool = typer.Option(False, help="time the store a --keep run left (same --datastreams and --days)")):
    BENCH_DIR.mkdir(exist_ok=True)
    BENCH_DIR.chmod(0o755)  # the postgres OS user enters it
    cluster = Cluster(BENCH_DIR / "db")
    cluster.up()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            for name, value in SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        cluster.down()
        cluster.up()
        url = cluster.url().rsplit("/", 1)[0] + "/store" if reuse else empty_database(cluster.url(), "store")
        migrate(url=url)
        if reuse:
            observations = stored(url)
        else:
            began = time.monotonic()
            observations = build(url, datastreams, days)
            print(f"built {observations:,} observations ({datastreams:,} datastreams, {days} days at 5 minutes) "
                  f"with their aggregates in {time.monotonic() - began:.0f} s", flush=True)
        end = START + timedelta(days=days)
        stream = datastreams // 2
        figures = floors(url, stream, end, runs)
        port = free_port()
        env = os.environ | {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(BENCH_DIR), "TWIN_HJ212_PORT": "0"}
        base = f"http://127.0.0.1:{port}"
        with process(uvicorn_argv("127.0.0.1", port) + KEEP_ALIVE, f"{base}/sta/v1.1", env, BENCH_DIR / "server.log"):
            http_ms, http_rows = over_http(base, stream, end, runs)
        print(f"\n{observations:,} observations; p50 of {runs} runs (ms)\n")
        print("| query | rows | p50 ms |")
        print("| --- | ---: | ---: |")
        print(f"| last 30 days raw over /sta/v1.1 (JSON) | {http_rows:,} | {http_ms:.1f} |")
        for name, (ms, rows) in figures.items():
            print(f"| SQL: {name} | {rows:,} | {ms:.1f} |")
        print("\nbytes per observation: " + ", ".join(f"{k} {v:.1f}" for k, v in sizes(url, observations).items()))
    finally:
        if keep:
            cluster.down()
        else:
            cluster.destroy()


if __name__ == "__main__":
    typer.run(main)
