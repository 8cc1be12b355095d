"""Readings storage: time-range queries over two years of hourly readings, one table layout against another.

    .venv/bin/python -m bench.readings --days 730      # first run generates and loads (a few minutes)

The data: the sample district's stations and `--days` of their hourly readings (etl.sample), loaded
through the ETL (`twin etl run`) into a throwaway cluster in $TMPDIR/twin-bench-readings, kept
for the next run. The layouts are copies of layers.water_quality in a `bench` schema, each
VACUUMed and ANALYZEd:

- station order + the layer's btree (station_code, observed_at): the table as a bulk load of
  the sample file leaves it (the file is one station after another);
- time order + that btree: the table as an hourly feed leaves it (every station's hour, then the next);
- time order + BRIN (observed_at) + the btree; station order + BRIN + the btree (BRIN relies on
  the physical order); time order + btree (observed_at) + the btree;
- monthly partitions (declarative, by observed_at) + the btree on each.

The queries, each with the same 15 random parameter sets on every layout, layouts interleaved:
one station's month (all columns), all stations' day, the series endpoint's daily aggregate of a
station for a year (its SQL: normal readings, mean/min/max of nine parameters per China day), the
viewer's newest classified readings of all stations (ORDER BY observed_at DESC LIMIT 500), and one
reading by fid (a popup). Printed: median milliseconds and shared buffers touched (EXPLAIN ANALYZE
BUFFERS of the first parameter set), the plan's top scan, and each layout's size.
"""

import os
import random
import statistics
import tempfile
import time
from datetime import timedelta, timezone
from pathlib import Path

import psycopg
import typer
from psycopg import sql

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-readings"
CST = timezone(timedelta(hours=8))
NINE = ["water_temp", "ph", "do", "conductivity", "turbidity", "codmn", "nh3n", "tp", "tn"]
ROUNDS = 15
LAYOUTS = {
    "station order, btree (station, time)": ("station", ["btree_pair"]),
    "time order, btree (station, time)": ("time", ["btree_pair"]),
    "time order, + BRIN (time)": ("time", ["btree_pair", "brin_time"]),
    "station order, + BRIN (time)": ("station", ["btree_pair", "brin_time"]),
    "time order, + btree (time)": ("time", ["btree_pair", "btree_time"]),
    "monthly partitions, btree (station, time)": ("partitions", ["btree_pair"]),
}
INDEXES = {
    "btree_pair": "CREATE INDEX ON {t} (station_code, observed_at)",
    "brin_time": "CREATE INDEX ON {t} USING brin (observed_at)",
    "btree_time": "CREATE INDEX ON {t} (observed_at)",
}


def database(days: int) -> str:
    """The bench cluster's URL, with the stations and `days` of readings loaded through the ETL."""
    from twin.cluster import Cluster

    BENCH_DIR.mkdir(exist_ok=True)
    BENCH_DIR.chmod(0o755)  # the postgres OS user enters it
    cluster = Cluster(BENCH_DIR / "db")
    cluster.up()
    url = cluster.url()
    os.environ |= {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(BENCH_DIR)}
    from twin.db import migrate, sync_engine

    migrate(url=url)
    with psycopg.connect(url) as conn:
        loaded = conn.execute("SELECT count(*) FROM layers.water_quality").fetchone()[0]
    if loaded:
        return url
    from etl.run import run_file
    from etl.sample import generate

    files = BENCH_DIR / "sample"
    started = time.monotonic()
    paths = generate(files, components=1000, days=days)
    print(f"generated {days} days of readings in {time.monotonic() - started:.0f} s "
          f"({paths['water_quality'].stat().st_size / 2**20:.0f} MiB CSV)", flush=True)
    for layer in ("monitoring_stations", "water_quality"):
        started = time.monotonic()
        result = run_file(sync_engine(), layer, paths[layer])
        if result.status != "succeeded":
            raise SystemExit(f"loading {layer} failed: {result.error}")
        print(f"loaded {layer}: {result.counts} in {time.monotonic() - started:.0f} s", flush=True)
    return url


def build_layouts(conn: psycopg.Connection) -> None:
    conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
    conn.execute("CREATE SCHEMA bench")
    first, last = conn.execute("SELECT date_trunc('month', min(observed_at)), max(observed_at) "
                               "FROM layers.water_quality").fetchone()
    for i, (name, (order, indexes)) in enumerate(LAYOUTS.items()):
        table = sql.Identifier("bench", f"layout_{i}")
        sort = "station_code, observed_at" if order == "station" else "observed_at, station_code"
        started = time.monotonic()
        if order == "partitions":
            conn.execute(sql.SQL("CREATE TABLE {t} (LIKE layers.water_quality) PARTITION BY RANGE (observed_at)")
                         .format(t=table))
            month = first
            while month <= last:
                following = (month + timedelta(days=32)).replace(day=1)
                conn.execute(sql.SQL("CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM ({a}) TO ({b})").format(
                    p=sql.Identifier("bench", f"layout_{i}_{month:%Y%m}"), t=table, a=sql.Literal(month),
                    b=sql.Literal(following)))
                month = following
            conn.execute(sql.SQL("INSERT INTO {t} SELECT * FROM layers.water_quality ORDER BY observed_at, "
                                 "station_code").format(t=table))
            conn.execute(sql.SQL("CREATE INDEX ON {t} (fid)").format(t=table))
        else:
            conn.execute(sql.SQL("CREATE TABLE {t} AS SELECT * FROM layers.water_quality ORDER BY " + sort)
                         .format(t=table))
            conn.execute(sql.SQL("ALTER TABLE {t} ADD PRIMARY KEY (fid)").format(t=table))
        for index in indexes:
            conn.execute(sql.SQL(INDEXES[index]).format(t=table))
        conn.commit()
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {t}").format(t=table))
        conn.autocommit = False
        print(f"built {name} in {time.monotonic() - started:.1f} s", flush=True)


QUERIES = {
    "one station's month": (
        "SELECT * FROM {t} WHERE station_code = %(station)s AND observed_at >= %(month)s "
        "AND observed_at < %(month)s + interval '1 month'"),
    "all stations' day": (
        "SELECT * FROM {t} WHERE observed_at >= %(day)s AND observed_at < %(day)s + interval '1 day'"),
    "series: a year, daily": (
        "SELECT date_trunc('day', observed_at, 'Asia/Shanghai') AS start, count(*), "
        + ", ".join(f'avg("{c}"), min("{c}"), max("{c}")' for c in NINE)
        + " FROM {t} WHERE station_code = %(station)s AND status = '正常' AND observed_at >= %(year)s "
          "AND observed_at < %(year)s + interval '1 year' GROUP BY 1 ORDER BY 1"),
    "newest 500 classified": (
        "SELECT station_code, water_class, observed_at FROM {t} WHERE water_class IS NOT NULL "
        "ORDER BY observed_at DESC LIMIT 500"),
    "one reading by fid": "SELECT * FROM {t} WHERE fid = %(fid)s",
}


def parameter_sets(conn: psycopg.Connection) -> list[dict]:
    stations = [r[0] for r in conn.execute("SELECT DISTINCT station_code FROM layers.water_quality ORDER BY 1")]
    first, last, top = conn.execute("SELECT min(observed_at), max(observed_at), max(fid) "
                                    "FROM layers.water_quality").fetchone()
    rng = random.Random(42)
    span = (last - first).days
    sets = []
    for _ in range(ROUNDS):
        day = (first + timedelta(days=rng.randrange(max(1, span - 1)))).astimezone(CST)
        day = day.replace(hour=0, minute=0, second=0, microsecond=0)
        year = (first + timedelta(days=rng.randrange(max(1, span - 365)))).astimezone(CST)
        sets.append({"station": rng.choice(stations), "day": day, "month": day.replace(day=1),
                     "year": year.replace(hour=0, minute=0, second=0, microsecond=0),
                     "fid": rng.randint(1, top)})
    return sets


def top_scan(plan: dict) -> str:
    node = plan
    while "Scan" not in node["Node Type"] and node.get("Plans"):
        node = node["Plans"][0]
    return node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")


def measure(conn: psycopg.Connection) -> None:
    sets = parameter_sets(conn)
    tables = {name: sql.Identifier("bench", f"layout_{i}") for i, name in enumerate(LAYOUTS)}
    for query, text in QUERIES.items():
        times = {name: [] for name in LAYOUTS}
        rows = {}
        for params in sets:
            for name, table in tables.items():
                statement = sql.SQL(text).format(t=table)
                started = time.perf_counter()
                found = conn.execute(statement, params).fetchall()
                times[name].append(time.perf_counter() - started)
                rows[name] = len(found)
        print(f"\n{query} (rows of the last set: {sorted(set(rows.values()))})")
        for name, table in tables.items():
            (plan,), = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text).format(t=table),
                                    sets[0]).fetchone()
            top = plan["Plan"]
            buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
            print(f"  {name:45} {statistics.median(times[name]) * 1e3:8.2f} ms  {buffers:6} buffers  "
                  f"{top_scan(top)}")
    print("\nsizes (table + indexes):")
    for name, table in tables.items():
        size = conn.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))), "
                            "pg_size_pretty(sum(pg_indexes_size(c.oid))) FROM pg_class c "
                            "WHERE c.oid = %s::regclass OR c.oid IN (SELECT inhrelid FROM pg_inherits "
                            "WHERE inhparent = %s::regclass)", (table.as_string(conn),) * 2).fetchone()
        print(f"  {name:45} {size[0]:>9} total, {size[1]:>9} indexes")


def main(days: int = typer.Option(730, help="days of hourly readings to generate on the first run"),
         rebuild: bool = typer.Option(True, help="rebuild the layouts from layers.water_quality")):
    url = database(days)
    with psycopg.connect(url) as conn:
        count, stations = conn.execute("SELECT count(*), count(DISTINCT station_code) "
                                       "FROM layers.water_quality").fetchone()
        print(f"{count} readings of {stations} stations; load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        if rebuild:
            build_layouts(conn)
        conn.execute("SET jit = off")  # as the server's sessions
        measure(conn)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    typer.run(main)
