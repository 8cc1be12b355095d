"""WAL volume and backup-repository growth under the live-monitoring simulator (`twin simulate`), on a throwaway
managed cluster that archives its WAL (twin.pitr, pgBackRest): the demo district loaded, a full base backup, the
server (`twin serve`) fed by the simulator over SensorThings HTTP and HJ 212, one phase per speed.

At speed 1 the feed is the district's own rate in real time, and archive_timeout's forced segment switches
count as they would; a sped-up phase puts a simulated day's readings through in minutes (its archive_timeout
switches are those of the wall-clock minutes, not of the day's). Last, `--observations` more readings of the
online sources' Datastreams (one a minute each, going back from now) go in through the store's own path
(sensing.store.insert_rows, 50,000 a transaction): the disk and WAL they take.

    .venv/bin/python -m bench.wal --speeds 1,288 --minutes 5 --observations 10000000
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import typer

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-wal"
TWIN = str(Path(sys.executable).with_name("twin"))
# readings: the online sources' observations, and the stations' readings (rows of the water_quality layer);
# WAL: the bytes of the records written (pg_stat_wal), not the LSN's advance, which counts the unused rest of
# every segment that archive_timeout switched
STATE = ("SELECT (SELECT wal_bytes FROM pg_stat_wal), (SELECT count(*) FROM sensing.observation), "
         "(SELECT count(*) FROM layers.water_quality), archived_count, failed_count FROM pg_stat_archiver")


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grow(url: str, n: int) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.etl_support import engine_for
    from sensing.store import ObservationRow, insert_rows

    sizes = ("SELECT pg_database_size(current_database()), pg_total_relation_size('sensing.observation') + "
             "coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
             "WHERE inhparent = 'sensing.observation'::regclass), 0), (SELECT wal_bytes FROM pg_stat_wal)")
    with psycopg.connect(url) as conn:
        streams = [r[0] for r in conn.execute("SELECT DISTINCT datastream_id FROM sensing.observation")]
        before = conn.execute(sizes).fetchone()
    assert streams, "no online source reported over HJ 212"
    engine = engine_for(url)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=n // len(streams) + 1)
    started = time.monotonic()
    for first in range(0, n, 50_000):
        rows = [ObservationRow(streams[i % len(streams)], start + timedelta(minutes=i // len(streams)),
                               7.0 + i % 100 / 10) for i in range(first, min(n, first + 50_000))]
        with engine.begin() as conn:
            insert_rows(conn, rows, actor="bench")
    took = time.monotonic() - started
    engine.dispose()
    with psycopg.connect(url) as conn:
        conn.execute("CHECKPOINT")
        after = conn.execute(sizes).fetchone()
        wal = float(after[2] - before[2])
    print(f"{n:,} readings of {len(streams)} Datastreams through sensing.store.insert_rows in {took:.0f} s: "
          f"database +{mb(after[0] - before[0])}, sensing.observation with its partitions "
          f"+{mb(after[1] - before[1])} ({(after[1] - before[1]) / n:.0f} bytes a reading), WAL {mb(wal)}")


def main(speeds: str = typer.Option("1,288", help="simulator speeds, one phase each"),
         minutes: float = typer.Option(5, help="wall-clock minutes of each phase"),
         components: int = typer.Option(20_000, help="city components of the demo district"),
         archive_timeout: int = typer.Option(60, help="archive_timeout of the cluster (s)"),
         observations: int = typer.Option(0, help="readings to store after the phases, for their disk growth")):
    from etl.bundle import load_bundle
    from tests.etl_support import engine_for
    from twin.db import migrate
    from twin.pitr import Archive
    from twin.settings import Settings

    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir()
    BENCH_DIR.chmod(0o755)  # the postgres OS user enters it
    settings = Settings(data_dir=BENCH_DIR / "var", archive_timeout_s=archive_timeout, backup_full_every_days=0)
    archive = Archive(settings)
    archive.up()
    server = None
    try:
        url = archive.cluster.url()
        migrate(url=url)
        archive.ensure()
        engine = engine_for(url)
        failed = [(name, r.error) for name, _, r in load_bundle(engine, settings, components=components)
                  if r.status not in ("succeeded", "skipped")]
        assert not failed, failed
        engine.dispose()
        backup = archive.backup()
        print(f"demo district ({components:,} components) loaded; full base backup {mb(backup.repository_bytes)} "
              f"in the repository; archive_timeout {archive_timeout} s")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "TWIN_DATABASE_URL"} | {
            "TWIN_DATA_DIR": str(settings.data_dir), "TWIN_ARCHIVE_TIMEOUT_S": str(archive_timeout),
            "TWIN_PORT": str(port), "TWIN_HJ212_PORT": str(free_port())}
        log = open(BENCH_DIR / "server.log", "w")
        server = subprocess.Popen([TWIN, "serve"], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        print("| speed | wall time | simulated | source observations | station readings | WAL | WAL per wall hour "
              "| segments archived | repository growth |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for speed in (float(s) for s in speeds.split(",")):
            since = min(24.0, speed * minutes / 60 + 0.1) if speed > 1 else 0.0  # never ahead of the real clock
            with psycopg.connect(url) as conn:
                wal_bytes, stored, readings, archived, failed = conn.execute(STATE).fetchone()
            repository = archive.window().repository_bytes
            started = time.monotonic()
            done = subprocess.run([TWIN, "simulate", "--url", base, "--paths", "http,hj212", "--speed", str(speed),
                                   "--since", str(since), "--duration", str(minutes * 60)], env=env,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            wall = time.monotonic() - started
            assert done.returncode == 0, done.stderr[-2000:]
            time.sleep(archive_timeout + 5)  # the last segment of the phase reaches the archive
            with psycopg.connect(url) as conn:
                now, observed, read, pushed, failures = conn.execute(STATE).fetchone()
                wal = float(now - wal_bytes)
            assert failures == failed, "archiving failed; see the server log"
            grown = archive.window().repository_bytes - repository
            print(f"| {speed:g} | {wall / 60:.1f} min | {speed * wall / 3600:.1f} h | {observed - stored:,} | "
                  f"{read - readings:,} | "
                  f"{mb(wal)} | {mb(wal * 3600 / wall)} | {pushed - archived} | {mb(grown)} |")
        print(f"repository at the end: {mb(archive.window().repository_bytes)}")
        if observations:
            grow(url, observations)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        archive.cluster.down()


if __name__ == "__main__":
    typer.run(main)
