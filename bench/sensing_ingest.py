"""SensorThings HTTP ingest (the dataArray extension) and the first unfiltered Observations page, each beside its
SQL floor, in one run.

    nice .venv/bin/python -m bench.sensing_ingest [--requests 30] [--streams 100] [--rows 100]

A throwaway cluster in $TMPDIR/twin-bench-ingest (deleted afterwards), migrated to head, with one discharger
Thing (Location and FeatureOfInterest as the online sources have) and `--streams` Datastreams of it, and the
real server (one uvicorn worker, as `twin serve` runs it).

- Ingest: `--requests` CreateObservations bodies of streams × rows observations each (new times, so every row
  is an insert), posted one after another with a department key: observations/s end to end, and the server's
  and PostgreSQL's CPU per 10,000 observations (from /proc, the steadier figure on a loaded machine). Beside
  it, where the time goes, measured in-process on the same kind of bodies with the server's own functions: JSON
  parsing, checking the rows into ObservationRows (sensing.sta.create.data_array_rows), and storing
  (sensing.store.insert_rows: the upsert and the aggregate triggers). Floors: the store's upsert statement
  alone from psycopg, and COPY into sensing.observation (the same triggers fire), on the same number of rows.
- The first page of /sta/v1.1/Observations (100, no filter) with the district's water-quality readings loaded
  (the bundle, with 3,000 components; the events room's alert triggers on the readings are turned off for the
  load, which this run does not time) and the stored observations: p50 over HTTP, the SQL that reads it (each part cut first,
  sensing.sta.query.first_observations), and the SQL that sorted the whole union before.
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
from sqlalchemy import create_engine, select

from bench.events import cpu_s
from bench.tile_peers import KEEP_ALIVE, process
from tests.etl_support import empty_database
from twin.cli import uvicorn_argv
from twin.cluster import Cluster, free_port
from twin.db import migrate

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-ingest"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
DEPARTMENT = "生态环境局"
METADATA = """
WITH thing AS (INSERT INTO sensing.thing (name, properties, department)
               VALUES ('ingest bench', '{"hj212_mn": "BENCH-INGEST"}', %(d)s) RETURNING id),
     place AS (INSERT INTO sensing.location (name, geom, department)
               VALUES ('outlet', ST_SetSRID(ST_MakePoint(120.41, 31.52), 4490), %(d)s) RETURNING id),
     linked AS (INSERT INTO sensing.thing_location SELECT thing.id, place.id FROM thing, place RETURNING thing_id),
     feature AS (INSERT INTO sensing.feature_of_interest (name, feature, department, location_id)
                 SELECT 'outlet', ST_SetSRID(ST_MakePoint(120.41, 31.52), 4490), %(d)s, place.id FROM place),
     sensor AS (INSERT INTO sensing.sensor (name, department) VALUES ('bench sensor', %(d)s) RETURNING id),
     prop AS (INSERT INTO sensing.observed_property (name, definition, department)
              VALUES ('COD', 'urn:bench:cod', %(d)s) RETURNING id)
INSERT INTO sensing.datastream (name, unit_of_measurement, observation_type, thing_id, sensor_id,
                                observed_property_id, department)
SELECT 'bench ' || n, '{"name": "mg/L", "symbol": "mg/L", "definition": "http://unitsofmeasure.org"}',
       'http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement', linked.thing_id, sensor.id, prop.id, %(d)s
FROM generate_series(1, %(n)s) n, linked, sensor, prop
RETURNING id
"""
ALERT_TRIGGERS = ("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE 'raise_alerts%%'")
UPSERT = ("INSERT INTO sensing.observation AS o (datastream_id, phenomenon_time, result, feature_of_interest_id) "
          "SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::float8[], %s::bigint[]) "
          "ON CONFLICT (datastream_id, phenomenon_time) DO UPDATE SET result = excluded.result "
          "RETURNING o.id")


def body(streams: list[int], rows: int, first: datetime) -> bytes:
    """One CreateObservations body: `rows` readings a minute apart from `first` for each Datastream."""
    return orjson.dumps([{"Datastream": {"@iot.id": s}, "components": ["phenomenonTime", "result"],
                          "dataArray": [[(first + timedelta(minutes=i)).isoformat(), 20 + (s * 7 + i) % 13 * 0.5]
                                        for i in range(rows)]} for s in streams])


def http_ingest(base: str, key: str, streams: list[int], rows: int, requests: int, first: datetime,
                server: int, cluster: Cluster) -> tuple[float, float, float]:
    """Observations/s, and the server's and PostgreSQL's CPU seconds per 10,000 observations (steadier than the
    rate on a loaded machine: one client's requests are serial, so the rate is bounded by their sum)."""
    bodies = [body(streams, rows, first + timedelta(minutes=rows * n)) for n in range(requests)]
    with httpx.Client(base_url=base, timeout=300) as http:
        began, server_cpu, database_cpu = time.perf_counter(), cpu_s(server), postgres_cpu_s(cluster)
        for content in bodies:
            response = http.post("/sta/v1.1/CreateObservations", content=content,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            assert response.status_code == 201, response.text[:300]
        size = len(streams) * rows * requests
        return (size / (time.perf_counter() - began), (cpu_s(server) - server_cpu) * 10_000 / size,
                (postgres_cpu_s(cluster) - database_cpu) * 10_000 / size)


def postgres_cpu_s(cluster: Cluster) -> float:
    """CPU seconds of the cluster's postmaster, its backends and the backends that have ended."""
    master = int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == master:
                total += cpu_s(int(stat.parent.name))
        except (OSError, ValueError):  # a process gone meanwhile
            pass
    return total


def phases(url: str, key: str, streams: list[int], rows: int, requests: int, first: datetime) -> dict[str, float]:
    """Seconds per 10,000 observations of each step of the dataArray path, with the server's own functions."""
    from sensing import store
    from sensing.sta import create
    from twin.auth import Principal

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        key_id = conn.exec_driver_sql("SELECT id FROM twin.api_key WHERE prefix = %s", (key.split("_")[1],)).scalar()
    principal = Principal(key_id, key.split("_")[1], DEPARTMENT, (), False)
    spent = {"parse JSON": 0.0, "check rows": 0.0, "store (upsert + triggers), commit": 0.0}
    for n in range(requests):
        content = body(streams, rows, first + timedelta(minutes=rows * n))
        began = time.perf_counter()
        items = orjson.loads(content)
        parsed = time.perf_counter()
        with engine.begin() as conn:
            built = create.data_array_rows(conn, principal, items)
            checked = time.perf_counter()
            store.insert_rows(conn, built, principal.actor)
        stored = time.perf_counter()
        spent["parse JSON"] += parsed - began
        spent["check rows"] += checked - parsed
        spent["store (upsert + triggers), commit"] += stored - checked
    engine.dispose()
    total = len(streams) * rows * requests
    return {name: seconds * 10_000 / total for name, seconds in spent.items()}


def floors(url: str, streams: list[int], rows: int, requests: int, first: datetime, feature: int) -> dict[str, float]:
    out = {}
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        for n in range(requests):
            at = first + timedelta(minutes=rows * n)
            ids = [s for s in streams for _ in range(rows)]
            times = [at + timedelta(minutes=i) for _ in streams for i in range(rows)]
            conn.execute(UPSERT, (ids, times, [20.0] * len(ids), [feature] * len(ids))).fetchall()
            conn.commit()
        out["SQL floor: the store's upsert (unnest, triggers)"] = len(streams) * rows * requests / (
            time.perf_counter() - began)
        later = first + timedelta(minutes=rows * requests)
        began = time.perf_counter()
        for n in range(requests):
            at = later + timedelta(minutes=rows * n)
            with conn.cursor().copy("COPY sensing.observation (datastream_id, phenomenon_time, result, "
                                    "feature_of_interest_id) FROM STDIN") as copy:
                for s in streams:
                    for i in range(rows):
                        copy.write_row((s, at + timedelta(minutes=i), 20.0, feature))
            conn.commit()
        out["SQL floor: COPY (triggers)"] = len(streams) * rows * requests / (time.perf_counter() - began)
    return out


def alerts(url: str, table: str, action: str) -> None:
    """ENABLE or DISABLE the events room's alert triggers on `table`."""
    with psycopg.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute(ALERT_TRIGGERS, (table,)).fetchall():
            conn.execute(f'ALTER TABLE {table} {action} TRIGGER "{name}"')


def p50(call, runs: int) -> float:
    times = []
    for n in range(runs + 1):
        began = time.perf_counter()
        call()
        if n:
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def first_page(url: str, base: str, runs: int) -> dict[str, float]:
    from sensing.sta.entities import ENTITIES
    from sensing.sta.query import first_observations

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    whole, cut = ENTITIES["Observation"].source(), first_observations(frozenset(), 101)
    out = {}
    with engine.connect() as conn, httpx.Client(base_url=base, timeout=60) as http:
        out["over /sta/v1.1 (JSON)"] = p50(lambda: http.get("/sta/v1.1/Observations").raise_for_status(), runs)
        for name, source in (("SQL: each part cut first (now)", cut), ("SQL: the whole union sorted (before)", whole)):
            statement = select(source).order_by(source.c.id).limit(101)
            out[name] = p50(lambda: conn.execute(statement).all(), runs)
        out["readings in the union"] = conn.exec_driver_sql("SELECT count(*) FROM layers.water_quality").scalar()
    engine.dispose()
    return out


def main(requests: int = typer.Option(30), streams: int = typer.Option(100), rows: int = typer.Option(100),
         runs: int = typer.Option(15), page: bool = typer.Option(True, help="also time the first Observations page")):
    from etl.bundle import load_bundle
    from twin.auth import create_key
    from twin.db import sync_engine
    from twin.settings import get_settings

    BENCH_DIR.mkdir(exist_ok=True)
    BENCH_DIR.chmod(0o755)
    cluster = Cluster(BENCH_DIR / "db")
    cluster.up()
    try:
        url = empty_database(cluster.url(), "ingest")
        os.environ |= {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(BENCH_DIR), "TWIN_HJ212_PORT": "0"}
        get_settings.cache_clear()
        sync_engine.cache_clear()
        migrate(url=url)
        with psycopg.connect(url) as conn:
            ids = [r[0] for r in conn.execute(METADATA, {"d": DEPARTMENT, "n": streams}).fetchall()]
            feature = conn.execute("SELECT id FROM sensing.feature_of_interest").fetchone()[0]
            conn.execute("SELECT sensing.ensure_partitions(%s, %s)", (START, START + timedelta(days=200)))
        with sync_engine().begin() as conn:
            key = create_key(conn, DEPARTMENT, [])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        size = streams * rows * requests
        with process(uvicorn_argv("127.0.0.1", port) + KEEP_ALIVE, f"{base}/sta/v1.1", dict(os.environ),
                     BENCH_DIR / "server.log") as server:
            rate = http_ingest(base, key, ids, rows, requests, START, server.pid, cluster)
            spent = phases(url, key, ids, rows, requests, START + timedelta(days=30))
            floor = floors(url, ids, rows, requests, START + timedelta(days=60), feature)
            alerts(url, "sensing.observation", "DISABLE")
            quiet = http_ingest(base, key, ids, rows, requests, START + timedelta(days=90), server.pid, cluster)
            alerts(url, "sensing.observation", "ENABLE")
            print(f"\nHTTP dataArray ingest: {requests} requests of {streams} × {rows} observations ({size:,} in all)\n")
            print("| path | observations/s | CPU s per 10,000: server | PostgreSQL |")
            print("| --- | ---: | ---: | ---: |")
            print("| POST /sta/v1.1/CreateObservations, one client | {:,.0f} | {:.3f} | {:.3f} |".format(*rate))
            print("| the same, the alert trigger on sensing.observation disabled | {:,.0f} | {:.3f} | {:.3f} |"
                  .format(*quiet))
            for name, value in floor.items():
                print(f"| {name} | {value:,.0f} | | |")
            print("\nwhere the time goes, in-process, seconds per 10,000 observations: "
                  + ", ".join(f"{name} {s:.3f}" for name, s in spent.items()), flush=True)
            if not page:
                return
            alerts(url, "layers.water_quality", "DISABLE")  # alerts are not what this run reads
            results = load_bundle(sync_engine(), get_settings(), components=3000)
            assert all(r.status == "succeeded" for _, _, r in results), [r.error for _, _, r in results if r.error]
            first = first_page(url, base, runs)
        readings = first.pop("readings in the union")
        print(f"\nfirst page of /sta/v1.1/Observations (100, unfiltered; {readings:,} water-quality readings and "
              f"{5 * size:,} stored observations), p50 of {runs} (ms)\n")
        print("| read | p50 ms |")
        print("| --- | ---: |")
        for name, ms in first.items():
            print(f"| {name} | {ms:.1f} |")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    typer.run(main)
