"""Sustained MQTT ingest, broker included, beside the raw SQL insert floor for the same rows.

    .venv/bin/python -m bench.mqtt_ingest --rate 20000 --seconds 30

Everything on this machine: a throwaway PostGIS ($TMPDIR/twin-bench-mqtt, made afresh), the managed mosquitto, the
real server (`twin serve`'s app under uvicorn, publishing what is stored, ingesting nothing itself) and `--ingests`
`twin ingest mqtt` processes sharing the stream. `--publishers` processes publish one observation per message
at QoS 1 (paho-mqtt, MQTT 3.1.1, as an admin key) to `--streams` Datastreams at `--rate` messages/s in all.
Measured:
- stored/s: observations stored per second over the steady middle of the run (rows counted in the database);
- publish → readable: a probe client publishes 5 observations/s to a Datastream of its own through the same
  broker and ingest, and polls GET /sta/v1.1/Datastreams(id)/Observations?$filter=phenomenonTime eq … until the
  observation is there; p50 / p95 / max over the probes;
- the floor: the same number of rows inserted into sensing.observation by one connection, 500 rows a statement
  (`INSERT … SELECT unnest(…) ON CONFLICT … DO UPDATE`, the store's own statement, triggers included);
- CPU per 1,000 observations stored, by part (publishers, broker, ingest, server, PostgreSQL; psutil), which the
  other work on a shared machine changes far less than the rates; and the load average at the start and end.
`--backlog`: the ingest alone (see `drain`), then beside it the floor of paho and the broker (bench.mqtt_floor).
`--profile`: the ingest processes under cProfile.
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
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psycopg
import typer

from bench import mqtt_floor

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-mqtt"
REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 5, 1, tzinfo=timezone.utc)
WINDOW = 300  # a publisher's QoS 1 messages awaiting PUBACK (paho walks them all at each PUBACK)
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


@contextmanager
def device(port: int, key: str, client_id: str):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.username_pw_set(key.split("_")[1], key)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish(port: int, key: str, streams: list[int], rate: float, seconds: float, offset: int, sent) -> None:
    """One publisher process: up to `rate` messages/s for `seconds`, round robin over `streams`, at most WINDOW
    awaiting the broker's PUBACK; then waits for every PUBACK. `sent`: the messages the broker acknowledged.
    One thread (sensing.mqtt_loop) and MQTT 3.1.1, like the ingest: a Python device process as cheap as paho
    allows, so that the publishers take as little of the two cores as they can."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from sensing.mqtt_loop import Loop

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{offset}", protocol=paho.MQTTv311)
    client.username_pw_set(key.split("_")[1], key)
    client.max_inflight_messages_set(WINDOW)
    client.connect_async("127.0.0.1", port)
    loop = Loop([client], threading.Event())
    acked = [0]
    client.on_publish = lambda c, u, mid, reason, properties: acked.__setitem__(0, acked[0] + 1)
    while not client.is_connected():
        loop.pump(0.05)
    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = min(int(elapsed * rate) + 1, acked[0] + WINDOW)
        while n < due:
            stream = streams[n % len(streams)]
            moment = START + timedelta(seconds=n // len(streams))  # the publishers have streams of their own
            client.publish(f"v1.1/Datastreams({stream})/Observations",
                           orjson.dumps({"phenomenonTime": moment.isoformat(), "result": n}), qos=1)
            n += 1
        loop.pump(0.002)
    while acked[0] < n and time.monotonic() - started < seconds + 30:
        loop.pump(0.01)
    sent.value = acked[0]
    client.disconnect()


def probe(port: int, key: str, stream: int, base: str, until: float, latencies: list[float]) -> None:
    with device(port, key, "bench-probe") as client, httpx.Client(base_url=base, timeout=10) as http:
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


def processes(broker_pid: int, ingest: list, publishers: list) -> dict[str, list]:
    """The processes whose CPU time the run counts, by part: psutil handles."""
    import psutil

    mine = psutil.Process().children(recursive=True)
    return {"publishers": [psutil.Process(p.pid) for p in publishers],
            "broker": [psutil.Process(broker_pid)],
            "ingest": [psutil.Process(p.pid) for p in ingest],
            "server (the probe's reads)": [p for p in mine if "uvicorn" in " ".join(p.cmdline())],
            "PostgreSQL": [p for p in psutil.process_iter() if p.name() == "postgres"
                           and str(BENCH_DIR) in " ".join(p.cmdline())]}


def cpu_seconds(parts: dict[str, list]) -> dict[str, float]:
    """CPU seconds (user + system) each part has used so far; PostgreSQL's postmaster counts its ended backends."""
    import psutil

    used = {}
    for name, group in parts.items():
        total = 0.0
        for process in group:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    family = process.children(recursive=True) if name == "PostgreSQL" else []
                total += times.user + times.system + times.children_user + times.children_system
                for child in family:
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
            except psutil.NoSuchProcess:
                pass
        used[name] = total
    return used


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


def drain(url: str, port: int, key: str, ids: list[int], rate: int, seconds: int, publishers: int, start_ingest,
          broker_pid: int) -> None:
    """The ingest's own capacity, the publishers out of the way: the messages of `seconds` at `rate` published
    while no ingest runs (its persistent session keeps them at the broker: at most its max_queued_messages,
    200,000), then one ingest started; prints the observations/s from its first stored row to the last, and
    the CPU per observation meanwhile; then the same backlog delivered to a bare subscriber (bench.mqtt_floor)."""
    from twin.settings import get_settings

    first_ingest = start_ingest(0)
    subscribed = START + timedelta(days=25)  # its persistent session holds the Datastreams' messages once this is in
    with psycopg.connect(url, autocommit=True) as conn, device(port, key, "bench-subscribed") as client:
        while not conn.execute("SELECT count(*) FROM sensing.observation WHERE phenomenon_time = %s",
                               (subscribed,)).fetchone()[0]:
            client.publish(f"v1.1/Datastreams({ids[0]})/Observations",
                           orjson.dumps({"phenomenonTime": subscribed.isoformat(), "result": 0}), qos=1)
            time.sleep(0.5)
    first_ingest.terminate()
    first_ingest.wait(timeout=30)
    mqtt_floor.subscribe(get_settings())  # the bare subscriber's session keeps the same backlog
    counts = [multiprocessing.Value("l", 0) for _ in range(publishers)]
    senders = [multiprocessing.Process(target=publish, args=(port, key, ids[i::publishers], rate / publishers,
                                                             seconds, i, counts[i])) for i in range(publishers)]
    for process in senders:
        process.start()
    for process in senders:
        process.join()
    backlog = sum(c.value for c in counts)
    print(f"backlog: {backlog:,} messages acknowledged by the broker, no ingest running; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ingest = start_ingest(1)
    try:
        while (first := stored(url)) == 0:
            assert ingest.poll() is None, "the ingest stopped"
            time.sleep(0.05)
        parts = processes(broker_pid, [ingest], [])
        first_at, first_cpu = time.monotonic(), cpu_seconds(parts)
        last, last_at, last_cpu = first, first_at, first_cpu
        while last < backlog and time.monotonic() - last_at < 10:  # drained, or nothing more for 10 s
            time.sleep(0.2)
            if (now := stored(url)) > last:
                last, last_at, last_cpu = now, time.monotonic(), cpu_seconds(parts)
    finally:
        ingest.terminate()
        ingest.wait(timeout=30)
    print(f"drained {last - first:,} observations in {last_at - first_at:.1f} s: "
          f"{(last - first) / (last_at - first_at):,.0f} observations/s (all {last:,} of {backlog:,} stored)")
    print("CPU per 1,000 observations while draining (ms): " + ", ".join(
        f"{name} {(last_cpu[name] - first_cpu[name]) * 1e6 / (last - first):,.0f}" for name in last_cpu
        if name in ("ingest", "broker", "PostgreSQL"))
        + f"; all together {sum(last_cpu.values()) - sum(first_cpu.values()):,.1f} CPU s")
    print(mqtt_floor.drain(backlog, broker_pid))


def main(rate: int = typer.Option(20_000, help="messages per second, all publishers together"),
         seconds: int = typer.Option(30, help="how long to publish"),
         streams: int = typer.Option(100, help="Datastreams published to"),
         publishers: int = typer.Option(2, help="publisher processes"),
         ingests: int = typer.Option(1, help="`twin ingest mqtt` processes"),
         batch: int = typer.Option(500, help="TWIN_MQTT_BATCH of the ingest processes"),
         profile: bool = typer.Option(False, help="run the ingest processes under cProfile (their main thread) and "
                                      "print where their time went"),
         backlog: bool = typer.Option(False, help="publish first with no ingest running, then time one ingest "
                                      "draining it (see `drain`)")):
    from tests.server_support import free_port, logged_server
    from twin.broker import Broker
    from twin.cluster import Cluster
    from twin.settings import get_settings

    print(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    url, ids, probe_stream, key = setup(streams)
    broker = Broker.of(get_settings())
    port = broker.status().port
    env = os.environ | {"TWIN_MQTT_BATCH": str(batch)}
    logs = [open(BENCH_DIR / f"ingest-{i}.log", "wb") for i in range(max(ingests, 2))]
    ingest = []
    try:
        with logged_server(url, BENCH_DIR, BENCH_DIR / "server.log", mqtt_ingest="false",
                           port=str(free_port())) as base:
            profiler = lambda i: ["-m", "cProfile", "-o", str(BENCH_DIR / f"ingest-{i}.prof")] if profile else []

            def start_ingest(i: int) -> subprocess.Popen:
                return subprocess.Popen([sys.executable, *profiler(i), "-m", "twin.cli", "ingest", "mqtt"], cwd=REPO,
                                        env=env, stdin=subprocess.DEVNULL, stdout=logs[i], stderr=logs[i])
            if backlog:
                drain(url, port, key, ids, rate, seconds, publishers, start_ingest, broker.status().pid)
            else:
                ingest = [start_ingest(i) for i in range(ingests)]
                time.sleep(4)  # the ingest processes subscribed
                latencies: list[float] = []
                prober = threading.Thread(target=probe, args=(port, key, probe_stream, base,
                                                              time.monotonic() + seconds, latencies))
                counts = [multiprocessing.Value("l", 0) for _ in range(publishers)]
                senders = [multiprocessing.Process(target=publish, args=(
                    port, key, ids[i::publishers], rate / publishers, seconds, i, counts[i]))
                    for i in range(publishers)]
                started = time.monotonic()
                for process in senders:
                    process.start()
                prober.start()
                time.sleep(seconds / 4)
                parts = processes(broker.status().pid, ingest, senders)
                first, first_at, first_cpu = stored(url), time.monotonic(), cpu_seconds(parts)
                time.sleep(seconds / 2)
                last, last_at, last_cpu = stored(url), time.monotonic(), cpu_seconds(parts)
                for process in senders:
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
    if backlog:
        print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        Cluster(BENCH_DIR / "db").down()
        return
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
    if last > first:
        print("CPU per 1,000 observations stored in the steady middle half (ms), by part: " + ", ".join(
            f"{name} {(last_cpu[name] - first_cpu[name]) * 1e6 / (last - first):,.0f}" for name in last_cpu)
            + f"; all together {sum(last_cpu.values()) - sum(first_cpu.values()):,.1f} CPU s in "
              f"{last_at - first_at:.1f} s")
    print(f"raw SQL floor (the store's INSERT, 500 rows a statement, one connection): "
          f"{floor(url, ids, published):,.0f} rows/s")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    Cluster(BENCH_DIR / "db").down()
    if profile:
        import pstats

        for i in range(ingests):
            pstats.Stats(str(BENCH_DIR / f"ingest-{i}.prof")).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    typer.run(main)
