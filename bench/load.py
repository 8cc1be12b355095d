"""Many users: a map session mix replayed against `twin serve --workers N` sharing one Redis tile cache.

    TWIN_DATA_DIR=/work/bench-var/var .venv/bin/python -m bench.load --users 50 --seconds 300

Each simulated user is a browser on the viewer (/map): it loads the page, the composite style
/styles/onemap, the collections and the TileJSON of a layer it switches on, then pans and zooms
over the district (zooms 10–16, a 1280×800 viewport of 512-pixel tiles, as MapLibre asks for them),
fetching the composite tiles (and the tiles of the layer it switched on) it has not
seen yet, six requests at a time like a browser; now and then it reads a page of features in the
viewport, opens a popup (one feature), asks what is at a point or nearest to it, or a station's
daily series. Between actions it thinks 1–4 s.

The server runs on loopback with its database from TWIN_DATA_DIR (the managed cluster there) and a
redis-server of its own; every 5 s the resident memory of each worker (the children of uvicorn's
supervisor) is sampled. Printed at the end: requests, errors (anything but 2xx and 304; a 204 is an
empty tile), p50/p99 per kind of request, throughput, and each worker's RSS after the warm-up
and at the end.
"""

import asyncio
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import httpx
import morecantile
import psutil
import typer

from bench.tile_peers import process

MERCATOR = morecantile.tms.get("WebMercatorQuad")
DISTRICT = (120.30, 31.45, 120.60, 31.62)
VIEWPORT = (1280, 800)
TILE_PX = 512  # MapLibre's vector tiles: a 512-pixel tile at map zoom z is tile z
BROWSER_CONNECTIONS = 6
KEEPALIVE_S = 4.0
LAYERS = ["city_components", "pollution_sources", "rivers", "roads", "monitoring_stations", "streets"]
POPUP_LAYERS = ["city_components", "pollution_sources"]
SAMPLE_EVERY_S = 5


class Tally:
    def __init__(self):
        self.latency = defaultdict(list)
        self.errors = defaultdict(int)
        self.examples: list[str] = []

    def record(self, kind: str, seconds: float, status: int | str):
        self.latency[kind].append(seconds)
        if not (isinstance(status, int) and (200 <= status < 300 or status == 304)):
            self.errors[kind] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {status}")


class User:
    def __init__(self, base: str, tally: Tally, rng: random.Random, stations: list[str]):
        # An idle connection is let go before uvicorn's 5 s keep-alive ends: reusing one just as the server
        # closes it is a transport error a browser silently retries.
        self.client = httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(
            max_connections=BROWSER_CONNECTIONS, keepalive_expiry=KEEPALIVE_S))
        self.tally, self.rng, self.stations = tally, rng, stations
        self.seen: set[str] = set()  # the browser's cache
        self.layer_tiles: dict[str, tuple[str, int, int]] = {}
        self.features: list[tuple[str, object]] = []
        self.lon = rng.uniform(DISTRICT[0] + 0.05, DISTRICT[2] - 0.05)
        self.lat = rng.uniform(DISTRICT[1] + 0.03, DISTRICT[3] - 0.03)
        self.z = rng.randint(11, 13)

    async def get(self, kind: str, url: str, **kwargs) -> httpx.Response | None:
        return await self._send(kind, "GET", url, **kwargs)

    async def _send(self, kind: str, method: str, url: str, **kwargs) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            self.tally.record(kind, time.monotonic() - started, type(e).__name__)
            return None
        self.tally.record(kind, time.monotonic() - started, response.status_code)
        return response

    def bbox(self) -> tuple[float, float, float, float]:
        x, y = MERCATOR.xy(self.lon, self.lat)
        metres_per_px = 2 * math.pi * 6378137 / (TILE_PX * 2 ** self.z)
        half_w, half_h = VIEWPORT[0] / 2 * metres_per_px, VIEWPORT[1] / 2 * metres_per_px
        west, south = MERCATOR.lnglat(x - half_w, y - half_h)
        east, north = MERCATOR.lnglat(x + half_w, y + half_h)
        return west, south, east, north

    async def open_map(self):
        for kind, url in (("page", "/map"), ("style", "/styles/onemap"), ("collections", "/collections")):
            await self.get(kind, url)
        for layer in self.rng.sample(LAYERS, 1):
            response = await self.get("tilejson", f"/collections/{layer}/tiles/WebMercatorQuad/tilejson.json")
            if response is not None and response.status_code == 200:
                doc = response.json()
                self.layer_tiles[layer] = (httpx.URL(doc["tiles"][0]).path, doc["minzoom"], doc["maxzoom"])
        await self.tiles()

    async def tiles(self):
        urls = []
        for t in MERCATOR.tiles(*self.bbox(), [self.z]):
            urls.append(("tile onemap", f"/tiles/onemap/WebMercatorQuad/{t.z}/{t.y}/{t.x}"))
            for template, low, high in self.layer_tiles.values():
                if low <= t.z <= high:
                    urls.append(("tile layer", template.replace("{z}", str(t.z)).replace("{y}", str(t.y))
                                 .replace("{x}", str(t.x))))
        await asyncio.gather(*(self.get(kind, url) for kind, url in urls if url not in self.seen))
        self.seen.update(url for _, url in urls)

    async def act(self):
        roll = self.rng.random()
        if roll < 0.55:  # pan by up to half a screen
            west, south, east, north = self.bbox()
            self.lon = min(max(self.lon + self.rng.uniform(-0.5, 0.5) * (east - west), DISTRICT[0]), DISTRICT[2])
            self.lat = min(max(self.lat + self.rng.uniform(-0.5, 0.5) * (north - south), DISTRICT[1]), DISTRICT[3])
            await self.tiles()
        elif roll < 0.80:  # zoom, drifting towards the middle levels
            step = self.rng.choice([-1, 1, 1]) if self.z < 14 else self.rng.choice([-1, -1, 1])
            self.z = min(max(self.z + step, 10), 16)
            await self.tiles()
        elif roll < 0.87:
            layer = self.rng.choice(POPUP_LAYERS)
            response = await self.get("items bbox", f"/collections/{layer}/items", params={
                "bbox": ",".join(f"{v:.6f}" for v in self.bbox()), "limit": 50})
            if response is not None and response.status_code == 200:
                self.features = [(layer, f["id"]) for f in response.json()["features"]]
        elif roll < 0.93:
            if self.features:
                layer, fid = self.rng.choice(self.features)
                await self.get("popup", f"/collections/{layer}/items/{fid}")
        elif roll < 0.96:
            await self._send("query at", "POST", "/query/at", json={"point": [self.lon, self.lat]})
        elif roll < 0.98:
            await self._send("query nearest", "POST", "/query/nearest", json={
                "point": [self.lon, self.lat], "layers": ["city_components", "pollution_sources"], "k": 5})
        elif self.stations:
            await self.get("series", "/collections/water_quality/series",
                           params={"station": self.rng.choice(self.stations), "aggregate": "daily"})

    async def session(self, until: float):
        try:
            await self.open_map()
            while time.monotonic() < until:
                await asyncio.sleep(self.rng.uniform(1.0, 4.0))
                if time.monotonic() < until:
                    await self.act()
        finally:
            await self.client.aclose()


def workers_of(server: psutil.Process) -> list[psutil.Process]:
    """uvicorn's worker processes: the children of its supervisor that serve (not multiprocessing's helpers)."""
    found = []
    for child in server.children(recursive=True):
        cmdline = " ".join(child.cmdline())
        if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
            found.append(child)
    return found


async def sample_memory(server: psutil.Process, started: float, until: float, samples: dict):
    while time.monotonic() < until + 1:
        for worker in workers_of(server):
            try:
                samples[worker.pid].append((time.monotonic() - started, worker.memory_info().rss))
            except psutil.NoSuchProcess:
                pass
        await asyncio.sleep(SAMPLE_EVERY_S)


async def drive(base: str, server: psutil.Process, users: int, seconds: float, seed: int) -> tuple[Tally, dict, float]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        stations = [f["properties"]["code"] for f in (await client.get(
            "/collections/monitoring_stations/items", params={"properties": "code", "limit": 1000})).json()["features"]]
    tally, samples = Tally(), defaultdict(list)
    started = time.monotonic()
    until = started + seconds
    rng = random.Random(seed)
    crowd = [User(base, tally, random.Random(rng.random()), stations) for _ in range(users)]
    sampler = asyncio.create_task(sample_memory(server, started, until, samples))

    async def arrive(i: int, user: User):
        await asyncio.sleep(i * min(10.0, seconds / 10) / users)  # users arrive over the first ten seconds
        await user.session(until)

    await asyncio.gather(*(arrive(i, u) for i, u in enumerate(crowd)))
    await sampler
    return tally, samples, time.monotonic() - started


@contextmanager
def redis_server(port: int):
    workdir = tempfile.mkdtemp(prefix="twin-load-redis-")
    try:
        with process([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                      "--appendonly", "no", "--dir", workdir]) as proc:
            yield f"redis://127.0.0.1:{port}/0", psutil.Process(proc.pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(tally: Tally, samples: dict, elapsed: float, warmup: float):
    total = sum(len(v) for v in tally.latency.values())
    errors = sum(tally.errors.values())
    print(f"\nrequests {total}, errors {errors}, {total / elapsed:.1f} requests/s over {elapsed:.0f} s, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'kind':15} {'count':>7} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind in sorted(tally.latency):
        values = sorted(tally.latency[kind])
        p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
        print(f"{kind:15} {len(values):7} {tally.errors[kind]:6} {statistics.median(values) * 1e3:8.1f} "
              f"{p99 * 1e3:8.1f} {values[-1] * 1e3:8.1f}")
    for example in tally.examples:
        print(f"  error: {example}")
    for pid, series in sorted(samples.items()):
        after = next((rss for t, rss in series if t >= warmup), series[-1][1])
        end = series[-1][1]
        print(f"worker {pid}: RSS {series[0][1] / 2**20:.0f} MiB at start, {after / 2**20:.0f} MiB after "
              f"{warmup:.0f} s, {end / 2**20:.0f} MiB at the end ({(end - after) / after * 100:+.1f}%)")


def main(users: int = typer.Option(50), seconds: float = typer.Option(300.0),
         workers: int = typer.Option(2), port: int = typer.Option(8860, help="the server's; Redis takes port+1"),
         warmup: float = typer.Option(60.0, help="seconds before the memory baseline"),
         seed: int = typer.Option(42)):
    if not os.environ.get("TWIN_DATA_DIR") and not os.environ.get("TWIN_DATABASE_URL"):
        os.environ["TWIN_DATA_DIR"] = "/work/bench-var/var"
    twin = str(Path(sys.executable).with_name("twin"))
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.gettempdir()) / "twin-load-server.log"
    with redis_server(port + 1) as (redis_url, redis):
        env = os.environ | {"TWIN_REDIS_URL": redis_url}
        argv = [twin, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        with process(argv, f"{base}/health", env, log, timeout=60) as proc:
            server = psutil.Process(proc.pid)
            while len(workers_of(server)) < workers:
                time.sleep(0.2)
            print(f"{users} users for {seconds:.0f} s against {base} ({workers} workers, Redis {redis_url}), "
                  f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
            tally, samples, elapsed = asyncio.run(drive(base, server, users, seconds, seed))
            redis_rss = redis.memory_info().rss
    report(tally, samples, elapsed, warmup)
    print(f"redis-server RSS at the end {redis_rss / 2**20:.0f} MiB")

if __name__ == "__main__":
    typer.run(main)
