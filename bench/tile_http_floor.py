"""The HTTP floor of a cold tile (issue 18): the least a Python ASGI server can do for a tile miss under the same
uvicorn options as ours, measured beside the SQL floor and this server, in turns, on the tile bench's tiles.

The bare app (`app` below) parses `/{z}/{y}/{x}`, plans the tile with our planner (as the SQL floor does) and runs
it on one asyncpg connection: no cache, access check, deadline, validation beyond the path, or logging. What this
server costs above the bare app is ours to cut; what the bare app costs above the SQL floor is the HTTP hop.

    .venv/bin/python -m bench.tile_http_floor
"""

import os
import sys
import statistics
import time

import asyncpg
import typer

from bench import tile_peers
from bench.tiles import Client, Floor, load, our_path, row, tile_set, timed
from tiles.plans import PlanCache, compile_plan, plan_shape
from tiles.request import layer_tile
from tiles.settings import tile_settings
from twin.db import session_settings
from twin.settings import get_settings

LAYER = "city_components"
HEADERS = [(b"content-type", b"application/vnd.mapbox-vector-tile")]


class BareTiles:
    def __init__(self):
        self.settings, self.plans, self.conn = tile_settings(), PlanCache(512), None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.conn = await asyncpg.connect(os.environ["TWIN_DATABASE_URL"],
                                                  server_settings=session_settings(get_settings()))
                await send({"type": "lifespan.startup.complete"})
            await self.conn.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        z, y, x = (int(part) for part in scope["path"].strip("/").split("/"))
        request = layer_tile(LAYER, "WebMercatorQuad", z, y, x, {})
        plan = self.plans.get(plan_shape(request, self.settings),
                              lambda: compile_plan(request.layer_requests(), request.tile, self.settings))
        body = await self.conn.fetchval(plan.sql, *plan.params(request.tile, self.settings)) or b""
        await send({"type": "http.response.start", "status": 200,
                    "headers": HEADERS + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


app = BareTiles()


def main(components: int = typer.Option(1_000_000, help="city components in the bench database"),
         count: int = typer.Option(500, "--tiles", help="tiles in the set"),
         rounds: int = typer.Option(4, help="times each tile is asked cold (the median counts)")):
    url, data_dir = tile_peers.bench_database(components, False)
    cases = [t for _, t in tile_set(url, count)]
    run = f"{time.time():.0f}"
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average " + load())
    port = tile_peers.free_port()
    env = os.environ | {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(data_dir)}
    argv = tile_peers.uvicorn(sys.executable, ["bench.tile_http_floor:app"], port)
    with tile_peers.ours(url, data_dir, data_dir / "run" / "ours.log") as ours, \
            tile_peers.process(argv, f"http://127.0.0.1:{port}/6/0/0", env, data_dir / "run" / "bare.log"):
        floor, mine, bare = Floor(url), Client(ours), Client(f"http://127.0.0.1:{port}")
        ask = {"floor": lambda t, n: timed(floor, LAYER, t)[0],
               "bare": lambda t, n: timed(bare, f"/{t.z}/{t.y}/{t.x}")[0],
               "ours": lambda t, n: timed(mine, f"{our_path(LAYER, t)}?run={run}-{n}")[0]}
        for t in cases:  # buffers and plans warmed alike
            floor(LAYER, t), bare(f"/{t.z}/{t.y}/{t.x}"), mine(f"{our_path(LAYER, t)}?run={run}-warm")
        times = {name: [[] for _ in cases] for name in ask}
        for n in range(rounds):
            for name in (list(ask) if n % 2 == 0 else list(ask)[::-1]):
                for i, t in enumerate(cases):
                    times[name][i].append(ask[name](t, n))
    medians = {name: [statistics.median(v) for v in per] for name, per in times.items()}
    print(f"\nCold, one client, in turns, the same {len(cases)} tiles, each the median of {rounds} rounds (ms)\n")
    print("| case | p50 | p99 | mean | max |\n| --- | ---: | ---: | ---: | ---: |")
    for name, label in (("floor", "SQL floor (psycopg, same SQL)"), ("bare", "bare ASGI app, same uvicorn, asyncpg"),
                        ("ours", "this server, cache miss")):
        print(row(label, medians[name]))
    for a, b in (("bare", "floor"), ("ours", "floor"), ("ours", "bare")):
        ratios = [x / y for x, y in zip(medians[a], medians[b])]
        print(f"{a} / {b}, per tile: median {statistics.median(ratios):.2f}, "
              f"sum {sum(medians[a]) / sum(medians[b]):.2f}")
    print(f"\nended {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average " + load())


if __name__ == "__main__":
    typer.run(main)
