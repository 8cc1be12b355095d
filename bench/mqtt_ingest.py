"""Sustained MQTT ingest, broker included, beside the raw SQL insert floor for the same rows.

    .venv/bin/python -m bench.mqtt_ingest --rate 20000 --seconds 30

Everything on this machine: a throwaway PostGIS ($TMPDIR/twin-bench-mqtt, made afresh), the managed mosquitto, the real
server (`twin serve`'s app under uvicorn, publishing what is stored, ingesting nothing itself) and `--ingests`
`twin ingest mqtt` processes sharing the stream. `--publishers` processes publish one observation per message
at QoS 1 (paho-mqtt, MQTT 5, as an admin key) to `--streams` Datastreams at `--rate` messages/s in all.
Measured:
- stored/s: observations stored per second over the steady middle of the run (rows counted in the database);
- publish → readable: a probe client publishes 5 observations/s to a Datastream of its own through the same
  broker and ingest, and polls GET /sta/v1.1/Datastreams(id)/Observations?$filter=phenomenonTime eq … until the
  observation is there; p50 / p95 / max over the probes;
- the floor: the same number of rows inserted into sensing.observation by one connection, 500 rows a statement
  (`INSERT … SELECT unnest(…) ON CONFLICT … DO UPDATE`, the store's own statement, triggers included).
"""

import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psycopg
import typer

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-mqtt"
REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 5, 1, tzinfo=timezone.utc)
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"


def setup(streams: int) -> tuple[str, list[int], int, str]:
    """(database URL, load Datastream ids, probe Datastream id, admin key) in a fresh bench cluster."""
    from twin.cluster import Cluster

    cluster = Cluster(BENCH_DIR / "db")
    cluster.destroy()  # a fresh one each run
    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir()
    BENCH_DIR.chmod(0o755)
    cluster.up()
    url = cluster.url()
    os.environ |= {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(BENCH_DIR), "TWIN_HJ212_PORT": "0"}
    from sensing.sta import create
    from twin.auth import Principal, create_key
    from twin.broker import Broker
    from twin.db import migrate, sync_engine
    from twin.settings import get_settings

    migrate(url=url)
    engine = sync_engine()
    admin = Principal(0, "bench", "bench", (), True)
    with engine.begin() as conn:
        Broker.of(get_settings()).up(conn)
        key = create_key(conn, "信息中心", [], True)
        ids = []
        for i in range(streams + 1):
            location = {"name": f"bench {i}", "description": "", "encodingType": "application/geo+json",
                        "location": {"type": "Point", "coordinates": [120.3 + i / 1000, 31.5]}}
            thing = create.thing(conn, admin, {"name": f"bench {i}", "description": "", "Locations": [location],
                                               "Datastreams": [{
                "name": f"bench {i}", "description": "", "observationType": MEASUREMENT,
                "unitOfMeasurement": {"name": "mg/L", "symbol": "mg/L", "definition": "http://unitsofmeasure.org"},
                "Sensor": {"name": f"bench {i}", "description": "", "encodingType": "text/html", "metadata": ""},
                "ObservedProperty": {"name": "bench", "description": "", "definition": "urn:bench:mqtt"}}]})
            ids.append(conn.exec_driver_sql("SELECT id FROM sensing.datastream WHERE thing_id = %s",
                                            (thing,)).scalar())
    return url, ids[:-1], ids[-1], key


def device(port: int, key: str, client_id: str):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.username_pw_set(key.split("_")[1], key)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish(port: int, key: str, streams: list[int], rate: float, seconds: float, offset: int, sent) -> None:
    """One publisher process: up to `rate` messages/s for `seconds`, round robin over `streams`, at most 2,000
    awaiting the broker's PUBACK; then waits for every PUBACK. `sent`: the messages the broker acknowledged."""
    client = device(port, key, f"bench-publisher-{offset}")
    acked = [0]
    client.on_publish = lambda c, u, mid, reason, properties: acked.__setitem__(0, acked[0] + 1)
    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = min(int(elapsed * rate) + 1, acked[0] + 2000)
        while n < due:
            stream = streams[n % len(streams)]
            moment = START + timedelta(seconds=n // len(streams))  # the publishers have streams of their own
            client.publish(f"v1.1/Datastreams({stream})/Observations",
                           orjson.dumps({"phenomenonTime": moment.isoformat(), "result": n}), qos=1)
            n += 1
        time.sleep(0.002)
    while acked[0] < n and time.monotonic() - started < seconds + 30:
        time.sleep(0.01)
    sent.value = acked[0]
    client.disconnect()
    client.loop_stop()


def probe(port: int, key: str, stream: int, base: str, until: float, latencies: list[float]) -> None:
    client = device(port, key, "bench-probe")
    with httpx.Client(base_url=base, timeout=10) as http:
        i = 0
        while time.monotonic() < until:
            moment = (START + timedelta(days=20, seconds=i)).isoformat().replace("+00:00", "Z")
            sent = time.monotonic()
            client.publish(f"v1.1/Datastreams({stream})/Observations",
                           orjson.dumps({"phenomenonTime": moment, "result": i}), qos=1)
            while time.monotonic() - sent < 30:
                answer = http.get(f"/sta/v1.1/Datastreams({stream})/Observations",
                                  params={"$filter": f"phenomenonTime eq {moment}"})
                answer.raise_for_status()
                if answer.json()["value"]:
                    latencies.append(time.monotonic() - sent)
                    break
                time.sleep(0.01)
            i += 1
            time.sleep(max(0.0, 0.2 - (time.monotonic() - sent)))
    client.disconnect()
    client.loop_stop()


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM sensing.observation WHERE phenomenon_time < %s",
                            (START + timedelta(days=20),)).fetchone()[0]


def floor(url: str, streams: list[int], rows: int) -> float:
    """Rows per second of the store's insert statement, 500 rows a statement, one connection."""
    statement = ("INSERT INTO sensing.observation AS o (datastream_id, phenomenon_time, result) "
                 "SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::float8[]) "
                 "ON CONFLICT (datastream_id, phenomenon_time) DO UPDATE SET result = excluded.result")
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for first in range(0, rows, 500):
            n = range(first, min(first + 500, rows))
            conn.execute(statement, ([streams[i % len(streams)] for i in n],
                                     [START + timedelta(days=25, seconds=i // len(streams)) for i in n],
                                     [float(i) for i in n]))
            conn.commit()
        return rows / (time.perf_counter() - started)


def main(rate: int = typer.Option(20_000, help="messages per second, all publishers together"),
         seconds: int = typer.Option(30, help="how long to publish"),
         streams: int = typer.Option(100, help="Datastreams published to"),
         publishers: int = typer.Option(2, help="publisher processes"),
         ingests: int = typer.Option(1, help="`twin ingest mqtt` processes"),
         batch: int = typer.Option(500, help="TWIN_MQTT_BATCH of the ingest processes")):
    from tests.server_support import free_port, logged_server
    from twin.broker import Broker
    from twin.cluster import Cluster
    from twin.settings import get_settings

    url, ids, probe_stream, key = setup(streams)
    broker = Broker.of(get_settings())
    port = broker.status().port
    env = os.environ | {"TWIN_MQTT_BATCH": str(batch)}
    logs = [open(BENCH_DIR / f"ingest-{i}.log", "wb") for i in range(ingests)]
    ingest = []
    try:
        with logged_server(url, BENCH_DIR, BENCH_DIR / "server.log", mqtt_ingest="false",
                           port=str(free_port())) as base:
            ingest = [subprocess.Popen([sys.executable, "-m", "twin.cli", "ingest", "mqtt"], cwd=REPO, env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log) for log in logs]
            time.sleep(4)  # the ingest processes subscribed
            latencies: list[float] = []
            prober = threading.Thread(target=probe, args=(port, key, probe_stream, base,
                                                          time.monotonic() + seconds, latencies))
            counts = [multiprocessing.Value("l", 0) for _ in range(publishers)]
            processes = [multiprocessing.Process(target=publish, args=(port, key, ids[i::publishers], rate / publishers,
                                                                       seconds, i, counts[i]))
                         for i in range(publishers)]
            started = time.monotonic()
            for process in processes:
                process.start()
            prober.start()
            time.sleep(seconds / 4)
            first, first_at = stored(url), time.monotonic()
            time.sleep(seconds / 2)
            last, last_at = stored(url), time.monotonic()
            for process in processes:
                process.join()
            prober.join()
            published = sum(c.value for c in counts)
            while stored(url) < published and time.monotonic() - started < seconds + 60:
                time.sleep(0.5)
            total, drained = stored(url), time.monotonic() - started
    finally:
        for process in ingest:
            process.terminate()
            process.wait(timeout=30)
        broker.down()
    sustained = (last - first) / (last_at - first_at)
    latencies.sort()
    p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else float("nan")  # nearest rank
    print(f"{publishers} publishers, {ingests} ingest process(es), batches of {batch}, {streams} Datastreams")
    print(f"published {published:,} messages acknowledged by the broker in {seconds} s "
          f"({published / seconds:,.0f}/s, asked {rate:,}/s); "
          f"stored {total:,} ({total / drained:,.0f}/s until drained at {drained:.1f} s)")
    print(f"MQTT ingest, steady middle half: {sustained:,.0f} observations/s; publish→readable over /sta/v1.1: "
          + (f"p50 {statistics.median(latencies) * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms, max "
             f"{latencies[-1] * 1000:,.0f} ms ({len(latencies)} probes)" if latencies else "no probe readable in 30 s"))
    print(f"raw SQL floor (the store's INSERT, 500 rows a statement, one connection): "
          f"{floor(url, ids, published):,.0f} rows/s")
    Cluster(BENCH_DIR / "db").down()


if __name__ == "__main__":
    typer.run(main)
