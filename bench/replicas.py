"""Reading from a streaming replica, side by side with reading from the primary, in one run.

A throwaway primary and a hot standby of it (tests.replica_support) on loopback; two servers on the
same primary: one reading from the primary only, one reading from the replica
(TWIN_DATABASE_READ_URLS). For each server, `--writes` times: rename one feature through the API and
poll until the item and its z14 tile show the new name (how long a map user waits for a write);
then the latency of cached-tile and item reads. Also the replica's replay lag as PostgreSQL reports it.

    .venv/bin/python -m bench.replicas --writes 30 --reads 300
"""

import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import typer

from tests.history_support import LAYER, bearer, source_feature
from tests.replica_support import primary_and_standby
from tests.server_support import logged_server
from tests.tile_support import decode, mercator_tile, tile_url

HERE = (120.9311, 32.1017)
PATCH = {"Content-Type": "application/merge-patch+json"}


@contextmanager
def server(primary: str, root: Path, name: str, **settings: str):
    """A server as `twin serve` runs it, on the primary (and `settings`), its log in `root`."""
    with logged_server(primary, root, root / f"{name}.log", **settings) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        yield http


def shows(http: httpx.Client, fid: int, url: str, name: str) -> tuple[bool, bool]:
    item = http.get(f"/collections/{LAYER}/items/{fid}")
    tile = http.get(url)
    names = [f["properties"]["name"] for f in decode(tile.content).get(LAYER, [])] if tile.status_code == 200 else []
    return item.status_code == 200 and item.json()["properties"]["name"] == name, names == [name]


def visible_after(http: httpx.Client, key: str, fid: int, url: str, name: str) -> tuple[float, float]:
    """ms from the write's answer until the item, and until the tile, show `name`."""
    response = http.patch(f"/collections/{LAYER}/items/{fid}", json={"properties": {"name": name}},
                          headers=bearer(key) | PATCH)
    response.raise_for_status()
    start, item_at, tile_at = time.perf_counter(), None, None
    while item_at is None or tile_at is None:
        item, tile = shows(http, fid, url, name)
        now = (time.perf_counter() - start) * 1000
        item_at = item_at if item_at is not None or not item else now
        tile_at = tile_at if tile_at is not None or not tile else now
        if now > 20_000:
            raise RuntimeError(f"{name} not visible after 20 s")
    return item_at, tile_at


def read_ms(http: httpx.Client, path: str, reads: int) -> list[float]:
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        http.get(path).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def main(writes: int = typer.Option(30, min=1), reads: int = typer.Option(300, min=1)) -> None:
    with primary_and_standby("twin-bench-replica-") as (root, primary, replica, key):
        url = tile_url(LAYER, mercator_tile(*HERE, 14))
        print(f"load average at start: {os.getloadavg()}")
        with server(primary.url(), root, "on-primary") as on_primary, \
                server(primary.url(), root, "on-replica", database_read_urls=replica.url()) as on_replica:
            fid = on_primary.post(f"/collections/{LAYER}/items", json=source_feature(1, *HERE, name="v0"),
                                  headers=bearer(key)).raise_for_status().json()["id"]
            runs = {"primary only": on_primary, "reads from replica": on_replica}
            seen = {name: [] for name in runs}
            for i in range(writes):  # interleaved, so both see the same machine load
                for name, http in runs.items():
                    seen[name].append(visible_after(http, key, fid, url, f"{name[:1]}{i}"))
            for name, http in runs.items():
                item_ms, tile_ms = zip(*seen[name])
                hits = read_ms(http, url, reads)
                items = read_ms(http, f"/collections/{LAYER}/items/{fid}", reads)
                print(f"{name:20s} write→item p50 {statistics.median(item_ms):6.1f} max {max(item_ms):6.1f} ms | "
                      f"write→tile p50 {statistics.median(tile_ms):6.1f} max {max(tile_ms):6.1f} ms | "
                      f"cached tile p50 {pct(hits, .5):5.2f} p99 {pct(hits, .99):5.2f} ms | "
                      f"item p50 {pct(items, .5):5.2f} p99 {pct(items, .99):5.2f} ms")
        with psycopg.connect(primary.url()) as conn:
            lag = conn.execute("SELECT write_lag, flush_lag, replay_lag FROM pg_stat_replication").fetchone()
        print(f"pg_stat_replication write/flush/replay lag: {lag}")
        print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    typer.run(main)
