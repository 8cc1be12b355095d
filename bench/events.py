"""Events: an exceedance to an alert at an SSE client; one event to 1,000 SSE clients; webhook throughput.

    .venv/bin/python -m bench.events [--clients 1000] [--alerts 30] [--fanout 20] [--webhook-events 10000]

A throwaway cluster in $TMPDIR/twin-bench-events (the bundled district loaded once, kept for the next run) and
one server worker (uvicorn, as `twin serve` runs it). Printed:

1. exceedance → alert: a reading over a rule's limit POSTed over SensorThings HTTP (not MQTT), timed from the
   POST to the `alert` event reaching an SSE client; p50/p95 over `--alerts` openings;
2. fan-out: `--clients` SSE clients (one asyncio process), `--fanout` changes written by SQL 0.25 s apart, each
   timed from its commit to its arrival at every client; p50/p95/max, the worker's RSS before the clients
   connected and after the last event, and the worker's CPU time per event (user + system while the events
   went out, less its rate over the `IDLE_S` idle seconds before them: the heartbeats), which a loaded
   machine inflates far less than the latencies;
3. webhooks: `--webhook-events` changes in one statement, timed from the commit until a local receiver has
   them all; beside it the floor, reading the same events from `GET /changes`.
"""

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import typer

from tests.events_support import Receiver, SseClient
from tests.server_support import logged_server
from tests.tile_support import wait_for

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-events"
IDLE_S = 3  # several heartbeat ticks (1 s apart): the idle rate is not one tick more or less


def database() -> str:
    from twin.cluster import Cluster

    BENCH_DIR.mkdir(exist_ok=True)
    BENCH_DIR.chmod(0o755)
    cluster = Cluster(BENCH_DIR / "db")
    cluster.up()
    url = cluster.url()
    os.environ |= {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(BENCH_DIR), "TWIN_HJ212_PORT": "0"}
    from twin.db import migrate, sync_engine
    from twin.settings import get_settings

    migrate(url=url)
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT count(*) FROM layers.monitoring_stations").fetchone()[0]:
            return url
    from etl.bundle import load_bundle

    load_bundle(sync_engine(), get_settings(), components=1000)
    return url


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(values: list[float]) -> str:
    return (f"n={len(values)} p50={statistics.median(values) * 1000:.0f} ms "
            f"p95={percentile(values, 95) * 1000:.0f} ms max={max(values) * 1000:.0f} ms")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """The process's user + system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(port: int) -> int:
    """The process listening on `port` (the single uvicorn worker)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inode = fields[9]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    raise RuntimeError("server process not found")


def key(url: str) -> str:
    from twin.auth import create_key
    from twin.db import sync_engine

    with sync_engine().begin() as conn:
        return create_key(conn, "生态环境局", ["water_quality", "monitoring_stations", "city_components"],
                          is_admin=True)


def alert_latency(base: str, url: str, token: str, rounds: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    with psycopg.connect(url) as conn:
        station, stream = conn.execute(
            "SELECT t.station_code, d.id FROM sensing.datastream d JOIN sensing.thing t ON t.id = d.thing_id "
            "WHERE d.wq_field = 'nh3n' ORDER BY t.id LIMIT 1").fetchone()
    rule = f"bench-{uuid.uuid4().hex[:6]}"
    httpx.put(f"{base}/alerts/rules/{rule}", json={"kind": "threshold", "parameter": "nh3n", "limit": 2.0,
                                                  "things": [station]}, headers=headers).raise_for_status()
    client = SseClient(base, {"topics": "alerts"})
    if not wait_for(lambda: client.heartbeats > 0, 10):
        raise RuntimeError("the SSE client did not connect")
    with psycopg.connect(url) as conn:  # after any reading stored: a rule's state only moves forward in time
        latest = conn.execute("SELECT max(observed_at) FROM layers.water_quality WHERE station_code = %s",
                              (station,)).fetchone()[0] or datetime.min.replace(tzinfo=timezone.utc)
    start = max(datetime.now(timezone.utc) - timedelta(hours=6), latest + timedelta(minutes=1)).replace(microsecond=0)
    if start + timedelta(minutes=2 * rounds) > datetime.now(timezone.utc):
        raise RuntimeError("readings of the bench station reach the present; remove $TMPDIR/twin-bench-events")
    latencies = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for i in range(rounds):
            for value, state in ((3.0, "open"), (1.0, "closed")):
                at = start + timedelta(minutes=2 * i + (value < 2))
                seen = len(client.events)
                sent = time.perf_counter()
                http.post(f"/sta/v1.1/Datastreams({stream})/Observations",
                          json={"phenomenonTime": at.isoformat(), "result": value}).raise_for_status()
                if not wait_for(lambda: any(e[1] == "alert" and e[2]["feature"]["properties"]["rule"] == rule
                                            and e[2]["feature"]["properties"]["state"] == state
                                            for e in client.events[seen:]), 30, every=0.002):
                    raise RuntimeError(f"no {state} alert event within 30 s")
                if state == "open":
                    latencies.append(time.perf_counter() - sent)
    client.close()
    return latencies


async def fanout(host: str, port: int, url: str, clients: int, events: int,
                 pid: int) -> tuple[list[float], float, float, int, float]:
    arrivals: dict[int, list[float]] = {}
    ready = asyncio.Event()
    connected = 0

    async def one():
        nonlocal connected
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /stream?topics=changes&layers=city_components HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        connected += 1
        if connected == clients:
            ready.set()
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"id: "):
                arrivals.setdefault(int(line[4:]), []).append(time.perf_counter())

    before = rss_mb(pid)
    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await asyncio.wait_for(ready.wait(), 120)
    idle_cpu, idle_at = cpu_s(pid), time.perf_counter()
    await asyncio.sleep(IDLE_S)
    idle_rate = (cpu_s(pid) - idle_cpu) / (time.perf_counter() - idle_at)
    busy_cpu, busy_at = cpu_s(pid), time.perf_counter()
    committed: dict[int, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(events):
            row = await conn.execute(
                "INSERT INTO layers.city_components (code, status, geom) VALUES (%s, '完好', "
                "ST_SetSRID(ST_MakePoint(120.4, 31.5), 4490)) RETURNING fid", (f"FAN{uuid.uuid4().hex[:10]}",))
            await row.fetchone()
            done = time.perf_counter()
            change = await (await conn.execute("SELECT max(change_id) FROM twin.change")).fetchone()
            committed[change[0]] = done
            await asyncio.sleep(0.25)
    await asyncio.sleep(1)
    per_event = (cpu_s(pid) - busy_cpu - idle_rate * (time.perf_counter() - busy_at)) / events
    await asyncio.sleep(9)  # stragglers: a late arrival counts at its latency, a missing one is reported
    after = rss_mb(pid)
    latencies = [t - committed[i] for i, times in arrivals.items() if i in committed for t in times]
    received = sum(len(arrivals.get(i, [])) for i in committed)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, before, after, received, per_event


def webhook_rate(base: str, url: str, token: str, count: int) -> tuple[float, float]:
    receiver = Receiver()
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{base}/webhooks", json={"url": receiver.url, "topics": ["changes"], "layers": ["city_components"]},
               headers=headers).raise_for_status()
    time.sleep(1)
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT coalesce(max(change_id), 0) FROM twin.change").fetchone()[0]
        conn.execute("INSERT INTO layers.city_components (code, status, geom) SELECT %s || i, '完好', "
                     "ST_SetSRID(ST_MakePoint(120.4, 31.5), 4490) FROM generate_series(1, %s) i",
                     (f"HOOK{uuid.uuid4().hex[:8]}-", count))
        conn.commit()
    started = time.perf_counter()
    if not wait_for(lambda: len(receiver.event_ids()) >= count, 300, every=0.01):
        raise RuntimeError(f"{len(receiver.event_ids())} of {count} events delivered in 300 s")
    delivered = time.perf_counter() - started
    receiver.close()
    started = time.perf_counter()
    after, read = first, 0
    with httpx.Client(base_url=base, timeout=60) as http:
        while read < count:
            page = http.get("/changes", params={"after": after, "layer": "city_components", "limit": 1000}).json()
            read += len(page["changes"])
            after = page["cursor"]
    floor = time.perf_counter() - started
    return count / delivered, count / floor


def main(clients: int = 1000, alerts: int = 30, fanout_events: int = typer.Option(20, "--fanout"),
         webhook_events: int = 10_000):
    url = database()
    token = key(url)
    with logged_server(url, BENCH_DIR, BENCH_DIR / "server.log", stream_heartbeat_s=1) as base:
        host, port = base.removeprefix("http://").split(":")
        pid = server_pid(int(port))
        print(f"1. exceedance (SensorThings HTTP POST) -> alert at an SSE client: "
              f"{summary(alert_latency(base, url, token, alerts))}", flush=True)
        latencies, before, after, received, per_event = asyncio.run(
            fanout(host, int(port), url, clients, fanout_events, pid))
        print(f"2. {clients} SSE clients, {fanout_events} events: {received} of {clients * fanout_events} received, "
              f"commit -> client {summary(latencies)}; worker RSS {before:.0f} MB before the clients, "
              f"{after:.0f} MB after (+{after - before:.0f} MB); worker CPU {per_event * 1000:.0f} ms per event",
              flush=True)
        delivered, floor = webhook_rate(base, url, token, webhook_events)
        print(f"3. webhooks: {webhook_events} events delivered at {delivered:.0f} events/s to a local receiver "
              f"(floor, GET /changes of the same events: {floor:.0f} events/s)", flush=True)


if __name__ == "__main__":
    typer.run(main)
