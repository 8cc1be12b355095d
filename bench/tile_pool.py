"""Tile connections side by side in one run: the renderer's own pool against asyncpg's, per cache miss.

    .venv/bin/python -m bench.tile_pool        # about a minute (plus the data the first time: bench.tiles')

The data: bench.tiles' throwaway cluster in $TMPDIR/twin-bench-tiles (the district, 1,000,000 city
components) and its 500 tiles. Each tile is the renderer's own plan (tiles.plans), run by one client, one
tile at a time, as a miss runs it: acquire a connection, fetchval, release. Two pools, both as big as the
server's, with the same connect options and session settings:

- home-made: the `Connections` tiles/render.py had before issue 18 (a semaphore and a list of idle
  connections, no reset), copied here so the comparison outlives it;
- asyncpg: `asyncpg.create_pool(min_size=0, max_size=pool_size, reset=<nothing>)`, acquired without a
  timeout, as tiles/render.py does while a connection is free (with one, asyncpg runs the acquire in a task). Its default reset (`Connection.reset()`) is
  one more round trip per miss; none is needed, as a tile changes nothing in the session.

Rounds take turns (which pool goes first alternates), after one unmeasured pass of each; a tile's figure
is its median over the rounds. Then the same for `SELECT 1`, which isolates the pool's own cost. Beside the
times, this process's CPU per item: on a busy machine the latencies wander, the CPU much less.
"""

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import typer
import uvloop

from bench import tile_peers
from bench.tiles import tile_set


class HomeMade:
    """tiles/render.py's `Connections` before issue 18, trimmed to what a miss runs."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int, wait_s: float):
        self._connect, self._wait_s = connect, wait_s
        self._free = asyncio.Semaphore(size)
        self._idle: list[asyncpg.Connection] = []
        self._era = 0

    async def acquire(self) -> tuple[asyncpg.Connection, int]:
        if self._free.locked():
            await asyncio.wait_for(self._free.acquire(), self._wait_s)
        else:
            await self._free.acquire()
        try:
            return (self._idle.pop() if self._idle else await self._connect()), self._era
        except BaseException:
            self._free.release()
            raise

    def release(self, conn: asyncpg.Connection, era: int, sound: bool) -> None:
        self._free.release()
        if sound and era == self._era and not conn.is_closed():
            self._idle.append(conn)
        else:
            conn.terminate()

    def close(self) -> None:
        for conn in self._idle:
            conn.terminate()


async def _nothing(conn: asyncpg.Connection) -> None:
    pass


def _ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def main(tiles: int, rounds: int, trivial: int) -> None:
    url, _ = tile_peers.bench_database(1_000_000, fresh=False)
    from tiles.plans import PlanCache, TilePlan, compile_plan, plan_shape
    from tiles.request import layer_tile
    from tiles.settings import tile_settings
    from twin.db import session_settings
    from twin.settings import get_settings

    settings, tile_opts = get_settings(), tile_settings()
    options = dict(timeout=settings.connect_timeout_s, max_cacheable_statement_size=1 << 20,
                   server_settings=session_settings(settings) | {"application_name": "twin-bench-tile-pool"})
    plans = PlanCache(1024)
    work = []
    for layer, t in tile_set(url, tiles):
        request = layer_tile(layer, "WebMercatorQuad", t.z, t.y, t.x, {})
        plan = plans.get(plan_shape(request, tile_opts),
                         lambda: compile_plan(request.layer_requests(), request.tile, tile_opts))
        work.append((plan, plan.params(request.tile, tile_opts)))

    home = HomeMade(lambda: asyncpg.connect(url, **options), settings.pool_size, settings.pool_timeout_s)
    pool = await asyncpg.create_pool(url, min_size=0, max_size=settings.pool_size,
                                     max_queries=1 << 62, reset=_nothing, **options)

    async def run(conn: asyncpg.Connection, plan, params) -> None:
        if plan.prepare:
            await conn.fetchval(plan.sql, *params)
        else:
            await (await conn.prepare(plan.sql)).fetchval(*params)

    async def home_miss(plan, params) -> float:
        started = time.perf_counter()
        conn, era = await home.acquire()
        await run(conn, plan, params)
        home.release(conn, era, True)
        return time.perf_counter() - started

    async def pool_miss(plan, params) -> float:
        started = time.perf_counter()
        conn = await pool.acquire()  # as the renderer acquires while a connection is free: no timeout task
        await run(conn, plan, params)
        await pool.release(conn)
        return time.perf_counter() - started

    cpu = {}  # (label, contestant) → this process's CPU seconds per item, over every round

    async def passes(label: str, items: list, rounds: int) -> dict[str, list[float]]:
        contestants = {"home-made": home_miss, "asyncpg pool": pool_miss}
        for miss in contestants.values():  # warm: connections open, statements prepared
            for item in items:
                await miss(*item)
        times = {name: [[] for _ in items] for name in contestants}
        for r in range(rounds):
            for name in (list(contestants) if r % 2 == 0 else list(reversed(contestants))):
                started = time.process_time()
                for i, item in enumerate(items):
                    times[name][i].append(await contestants[name](*item))
                cpu[label, name] = cpu.get((label, name), 0) + (time.process_time() - started) / len(items) / rounds
        return {name: [statistics.median(per) for per in per_item] for name, per_item in times.items()}

    print(f"load average at the start: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    tile_times = await passes("tile", work, rounds)
    trivial_times = await passes("SELECT 1", [(TilePlan("SELECT 1", (), {}, True), [])] * trivial, rounds)
    ended = time.strftime("%H:%M:%S", time.gmtime())
    print(f"{started}–{ended} UTC, load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{len(work)} tiles, {rounds} rounds; {trivial} × SELECT 1, {rounds} rounds; pool size {settings.pool_size}")
    print("| per miss (acquire + fetchval + release) | p50 | p90 | p99 | mean |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, times in (("tile", tile_times), ("SELECT 1", trivial_times)):
        for name, values in times.items():
            print(f"| {label}, {name} | {_ms(values, .5):.3f} ms | {_ms(values, .9):.3f} ms | "
                  f"{_ms(values, .99):.3f} ms | {statistics.fmean(values) * 1000:.3f} ms |")
    for label, times in (("tile", tile_times), ("SELECT 1", trivial_times)):
        differences = [b - a for a, b in zip(times["home-made"], times["asyncpg pool"])]
        print(f"{label}: asyncpg pool minus home-made, per item: median {_ms(differences, .5):+.3f} ms, "
              f"mean {statistics.fmean(differences) * 1000:+.3f} ms; this process's CPU per item (the pool and the "
              f"driver): home-made {cpu[label, 'home-made'] * 1e6:.0f} µs, asyncpg pool "
              f"{cpu[label, 'asyncpg pool'] * 1e6:.0f} µs")
    home.close()
    await pool.close()


def cli(tiles: int = typer.Option(500, help="tiles (bench.tiles' set)"),
        rounds: int = typer.Option(8, help="measured rounds, taking turns"),
        trivial: int = typer.Option(2000, help="SELECT 1 per round")) -> None:
    uvloop.run(main(tiles, rounds, trivial))


if __name__ == "__main__":
    typer.run(cli)
