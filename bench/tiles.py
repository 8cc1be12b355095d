"""Vector tiles side by side in one run: the SQL floor, this server and tipg cold; this server and nginx warm.

    .venv/bin/python -m bench.tiles            # about 4 minutes, plus about 1.5 the first time (data)

The data: a throwaway PostGIS cluster in $TMPDIR/twin-bench-tiles with the district and 1,000,000
generated city components, loaded through the ETL (kept for the next run; `--fresh` rebuilds it).
The tiles: 500 Web Mercator tiles of city components over their extent at zooms 6–16 (every tile
of 6–13, an even sample of 14–16).

- floor: our tile's own SQL (the same text and parameters, tiles.plans) run by psycopg on one
  connection, prepared as the server prepares it, binary results, the server's session options,
  no HTTP;
- cold: each tile asked of this server (a fresh query parameter, so a cache miss) and of tipg (no
  cache), one client on a keep-alive connection; two programs at a time (floor and ours, then ours
  and tipg), in whole passes over the tiles taking turns, four rounds (each tile's median counts),
  after one unmeasured pass of each. Taking turns tile by tile, with tipg among them, put ours
  further above the floor (a request right after another program's on the same tile is slower);
  see docs/benchmarks.md. Then wrk with 8 connections for 30 s
  cycling through the tiles in a shuffled order, each pass with a fresh parameter (all misses);
- warm: this server's cached tiles and the same bytes as static files from nginx, wrk cycling
  through the 500 tiles on 8 connections.

Both HTTP servers run one uvicorn worker with httptools and uvloop; nginx runs one worker. All on
loopback, beside the database, on the same cores: the figures are this machine's, side by side.

Needs, for the bench only: tipg in a venv of its own (`python3 -m venv /tmp/tipgvenv &&
/tmp/tipgvenv/bin/pip install tipg 'uvicorn[standard]'`), and Debian's nginx and wrk
(`apt-get install -y nginx wrk`).
"""

import math
import os
import random
import socket
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import morecantile
import psycopg
import typer

from bench import tile_peers

MERCATOR = morecantile.tms.get("WebMercatorQuad")
ZOOMS = range(6, 17)


def tile_set(url: str, count: int) -> list[tuple[str, morecantile.Tile]]:
    """(layer, tile) pairs: every tile of the low zooms over the components' extent, the rest sampled evenly."""
    with psycopg.connect(url) as conn:
        extent = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                              "(SELECT ST_Extent(geom) e FROM layers.city_components) s").fetchone()
    chosen = []
    by_zoom = {z: list(MERCATOR.tiles(*extent, [z])) for z in ZOOMS}
    dense = [z for z in ZOOMS if len(by_zoom[z]) > 200]
    for z in ZOOMS:
        if z not in dense:
            chosen += [("city_components", t) for t in by_zoom[z]]
    if count < len(chosen) + len(dense):
        raise SystemExit(f"--tiles must be at least {len(chosen) + len(dense)}: every tile of zooms 6–"
                         f"{min(dense) - 1} is in the set")
    rng = random.Random(42)
    share = (count - len(chosen)) // len(dense)
    for i, z in enumerate(dense):
        take = share if i < len(dense) - 1 else count - len(chosen)
        chosen += [("city_components", t) for t in sorted(rng.sample(by_zoom[z], take))]
    return chosen


def our_path(layer: str, t: morecantile.Tile) -> str:
    return f"/collections/{layer}/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}"


def tipg_path(layer: str, t: morecantile.Tile) -> str:
    return f"/collections/layers.{layer}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}"


class Floor:
    """Our tile SQL straight from a client: plan text and parameters as the server binds them."""

    def __init__(self, url: str):
        from tiles.plans import PlanCache, compile_plan, plan_shape
        from tiles.request import layer_tile
        from tiles.settings import tile_settings
        from twin.db import session_options
        from twin.settings import get_settings

        self.settings, self.plans, self.ask = tile_settings(), PlanCache(512), layer_tile
        self.compile, self.shape = compile_plan, plan_shape
        self.conn = psycopg.connect(url, autocommit=True, options=session_options(get_settings()))

    def __call__(self, layer: str, t: morecantile.Tile) -> bytes:
        request = self.ask(layer, "WebMercatorQuad", t.z, t.y, t.x, {})
        plan = self.plans.get(self.shape(request, self.settings),
                              lambda: self.compile(request.layer_requests(), request.tile, self.settings))
        row = psycopg.RawCursor(self.conn).execute(plan.sql, plan.params(request.tile, self.settings),
                                                   prepare=plan.prepare, binary=True).fetchone()
        return bytes(row[0] or b"")


class Client:
    """One keep-alive HTTP/1.1 connection on a bare socket, for both servers alike.

    The standard library's client spends about 0.35 ms of Python per request parsing headers, as much
    as the whole gap being measured on a small tile; this one reads the status line, the headers and
    a Content-Length body (what both servers send) and nothing more.
    """

    def __init__(self, base: str):
        self.sock = socket.create_connection(urlsplit(base).netloc.rsplit(":", 1), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host, self.buffer = urlsplit(base).netloc.encode(), b""

    def __call__(self, path: str) -> tuple[int, bytes, dict]:
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), self.host))
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        if "chunked" in headers.get("transfer-encoding", ""):
            raise RuntimeError(f"{path}: a chunked response, which this client does not read")
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), body, headers

    def _read(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data


LABELS = {"floor": "SQL floor (psycopg, same SQL)", "ours": "this server, cache miss", "tipg": "tipg"}


def timed(run, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = run(*args)
    return (time.perf_counter() - start) * 1000, result


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def row(name: str, times: list[float]) -> str:
    return f"| {name} | {pct(times, 50):.2f} | {pct(times, 99):.2f} | {statistics.mean(times):.2f} | {max(times):.1f} |"


def main(components: int = typer.Option(1_000_000, help="city components in the bench database"),
         count: int = typer.Option(500, "--tiles", help="tiles in the set"),
         connections: int = typer.Option(8, help="concurrent connections of the wrk runs"),
         seconds: int = typer.Option(10, help="length of each wrk run"),
         rounds: int = typer.Option(4, help="times each tile is asked cold (the median counts)"),
         tipg_python: str = typer.Option("/tmp/tipgvenv/bin/python", help="the python of tipg's own venv"),
         fresh: bool = typer.Option(False, help="rebuild the bench database")):
    if not Path(tipg_python).exists():
        raise SystemExit(f"no tipg at {tipg_python}: python3 -m venv /tmp/tipgvenv && "
                         "/tmp/tipgvenv/bin/pip install tipg 'uvicorn[standard]'")
    url, data_dir = tile_peers.bench_database(components, fresh)
    work = data_dir / "run"
    work.mkdir(exist_ok=True)
    cases = tile_set(url, count)
    ours_paths = [our_path(layer, t) for layer, t in cases]
    tipg_paths = [tipg_path(layer, t) for layer, t in cases]
    run = f"{time.time():.0f}"  # this run's cache-busting value: every tile is a miss once
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average " + load())
    print(f"{len(cases)} tiles: " + ", ".join(f"z{z} {sum(t.z == z for _, t in cases)}" for z in range(6, 17)))

    with tile_peers.ours(url, data_dir, work / "ours.log") as ours, \
            tile_peers.tipg(tipg_python, url, work / "tipg.log") as peer:
        floor, our_client, tipg_client = Floor(url), Client(ours), Client(peer)
        for i, (layer, t) in enumerate(cases):  # the database's buffers, and each program's plans, warmed alike
            floor(layer, t)
            our_client(f"{ours_paths[i]}?run={run}-warm")
            tipg_client(tipg_paths[i])
        sizes = {"ours": [0] * len(cases), "tipg": [0] * len(cases)}

        def ask(name: str, i: int, bust: str) -> float:
            (layer, t), mine, theirs = cases[i], ours_paths[i], tipg_paths[i]
            if name == "floor":
                return timed(floor, layer, t)[0]
            if name == "ours":
                ms, (status, body, headers) = timed(our_client, f"{mine}?run={run}-{bust}")
                assert status in (200, 204) and headers.get("x-tile-cache") == "miss", (mine, status)
            else:
                ms, (status, body, _) = timed(tipg_client, theirs)
                assert status in (200, 204), (theirs, status)
            sizes[name][i] = len(body)
            return ms

        for pair in (("floor", "ours"), ("ours", "tipg")):
            per_tile = {name: [[] for _ in cases] for name in pair}
            for n in range(rounds):  # whole passes over the tiles, in turns
                for name in (pair if n % 2 == 0 else pair[::-1]):
                    for i in range(len(cases)):
                        per_tile[name][i].append(ask(name, i, f"{pair[1]}{n}"))
            times = {name: [statistics.median(tile) for tile in tiles] for name, tiles in per_tile.items()}
            print(f"\nCold, one client, {' and '.join(pair)} in turns (whole passes), the same {len(cases)} tiles, "
                  f"each the median of {rounds} rounds (ms)\n")
            print("| case | p50 | p99 | mean | max |\n| --- | ---: | ---: | ---: | ---: |")
            for name in pair:
                print(row(LABELS[name], times[name]))
            if pair[0] == "floor":
                ratios = [o / f for o, f in zip(times["ours"], times["floor"])]
                print(f"\nthis server / floor, per tile: median {statistics.median(ratios):.2f}, "
                      f"sum {sum(times['ours']) / sum(times['floor']):.2f}")
            for z in range(6, 17):
                picked = [i for i, (_, t) in enumerate(cases) if t.z == z]
                if picked:
                    print(f"  z{z:<2} n={len(picked):<3} " + "  ".join(
                        f"{name} {statistics.median([times[name][i] for i in picked]):8.2f}" for name in pair)
                        + " ms (median)" + "".join(f"   bytes {name} {max(sizes[name][i] for i in picked):>7}"
                                                   for name in pair if name != "floor") + " (max)")

        print(f"\nCold throughput, wrk, {connections} connections, {3 * seconds} s, the tiles shuffled, "
              "every request a miss\n")
        order = random.Random(7).sample(range(len(cases)), len(cases))  # every stretch of the run mixes zooms
        cold = {"this server": tile_peers.wrk(ours, [ours_paths[i] for i in order], work, 3 * seconds, connections,
                                              fresh=f"c{run}"),
                "tipg": tile_peers.wrk(peer, [tipg_paths[i] for i in order], work, 3 * seconds, connections,
                                       fresh="c")}
        print("| server | tiles/s | p50 ms | p99 ms | errors |\n| --- | ---: | ---: | ---: | ---: |")
        for name, result in cold.items():
            print(f"| {name} | {result['rate']:.1f} | {result['p50']:.1f} | {result['p99']:.1f} | {result['errors']} |")

        static = work / "static"
        for path in ours_paths:  # the same bytes nginx will serve; this also warms our cache
            status, body, _ = our_client(path)
            (static / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (static / path.lstrip("/")).write_bytes(body)
        assert all(our_client(p)[2].get("x-tile-cache") == "hit" for p in ours_paths), "not all tiles cached"
        with tile_peers.nginx(static, work / "nginx") as web:
            warm = {"this server (cache hit)": tile_peers.wrk(ours, ours_paths, work, seconds, connections),
                    "nginx, static files": tile_peers.wrk(web, ours_paths, work, seconds, connections)}
        print(f"\nWarm, wrk, {connections} connections, {seconds} s, cycling through the {len(cases)} tiles\n")
        print("| server | tiles/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: |")
        for name, result in warm.items():
            print(f"| {name} | {result['rate']:.0f} | {result['p50']:.2f} | {result['p99']:.2f} |")

        print("\nLow zooms over the million components (cold, ms and bytes)\n")
        centre = MERCATOR.tile(120.43, 31.50, 8)
        for name, client, path in (
                ("tipg, city components z8", tipg_client, tipg_path("city_components", centre)),
                ("this server, city components z8", our_client, our_path("city_components", centre)),
                ("this server, one-map z8", our_client, f"/tiles/onemap/WebMercatorQuad/8/{centre.y}/{centre.x}"),
                *((f"this server, city components z{z} (clustered)", our_client,
                   our_path("city_components", MERCATOR.tile(120.43, 31.50, z))) for z in (6, 10, 11))):
            ms, (status, body, _) = timed(client, f"{path}?run=low{run}")
            print(f"  {name:<46} {status}  {ms:8.1f} ms  {len(body):>8} bytes")
    print(f"\nended {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average " + load())


def load() -> str:
    """The machine's load average (1, 5, 15 minutes): the machine is shared, so a run says how busy it was."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    typer.run(main)
