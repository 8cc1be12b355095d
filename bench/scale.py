"""Serving a large district (issue #9's targets at 10M components), against a running server.

    TWIN_DATA_DIR=/work/bench-var/var10m-etl .venv/bin/python -m bench.scale --url http://127.0.0.1:8860

- tiles: every city-components tile of zooms 6–13 over the layer's extent and an even seeded sample of
  zooms 14–16 (bench.tiles' set), each asked once cold (a fresh query parameter: a cache miss) on one
  keep-alive connection: per zoom p50 / p99 / max time and the largest tile; the targets are every tile
  under 300 ms p99 and under 1 MB;
- items: a page of 1,000 features in a bbox (a map viewport at z14 and z16, and a tenth of a degree),
  `--runs` times: p50 (target < 200 ms);
- as of: the same pages and a busy z14 tile as of a moment before the layer's last change (so the
  superseded versions of what that write changed are read from the history), against the current
  state: the ratio of p50s (target ≤ 2).
"""

import json
import statistics
import time
from datetime import timedelta
from urllib.parse import quote

import morecantile
import psycopg
import typer

from bench.tiles import Client, our_path, pct, tile_set
from twin.db import database_url

VIEWPORTS = {  # lon/lat boxes around the district's densest area
    "z16 viewport (0.007° × 0.005°)": (120.400, 31.500, 120.407, 31.505),
    "z14 viewport (0.027° × 0.02°)": (120.390, 31.490, 120.417, 31.510),
    "0.1° × 0.1°": (120.35, 31.45, 120.45, 31.55),
}


def _timed(client: Client, path: str) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    status, body, _ = client(path)
    return (time.perf_counter() - start) * 1000, status, body


def _before_last_change(url: str) -> str:
    with psycopg.connect(url) as conn:
        last = conn.execute("SELECT changed_at FROM twin.change WHERE layer = 'city_components' "
                            "ORDER BY change_id DESC LIMIT 1").fetchone()[0]
    return (last - timedelta(seconds=1)).isoformat()


def tiles(client: Client, url: str, count: int, run: str) -> None:
    cases = tile_set(url, count)
    print(f"\nCold tiles, {len(cases)} of city components, one client, each once (ms; bytes)\n")
    print("| zoom | tiles | p50 | p99 | max | largest |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    times, sizes = {}, {}
    for layer, t in cases:
        ms, status, body = _timed(client, f"{our_path(layer, t)}?run={run}")
        assert status in (200, 204), (t, status)
        times.setdefault(t.z, []).append(ms)
        sizes.setdefault(t.z, []).append(len(body))
    for z in sorted(times):
        print(f"| z{z} | {len(times[z])} | {pct(times[z], 50):.1f} | {pct(times[z], 99):.1f} | {max(times[z]):.1f} "
              f"| {max(sizes[z]):,} |")
    every = [ms for zoom in times.values() for ms in zoom]
    print(f"| all | {len(every)} | {pct(every, 50):.1f} | {pct(every, 99):.1f} | {max(every):.1f} "
          f"| {max(max(s) for s in sizes.values()):,} |")
    print(f"\nover 300 ms: {sum(ms > 300 for ms in every)}; over 1 MB: "
          f"{sum(b > 2**20 for zoom in sizes.values() for b in zoom)}")


def pages(client: Client, runs: int, as_of: str, busy: morecantile.Tile, run: str) -> None:
    print(f"\nItems pages of 1,000 and a z14 tile, current vs as of {as_of}, {runs} runs each, interleaved (ms)\n")
    print("| request | current p50 | as of p50 | ratio | features / bytes |\n| --- | ---: | ---: | ---: | ---: |")
    cases = {f"items, {name}": "/collections/city_components/items?limit=1000&bbox=" + ",".join(map(str, box))
             for name, box in VIEWPORTS.items()}
    cases[f"tile z14 {busy.x}/{busy.y} (cold)"] = our_path("city_components", busy)
    for name, path in cases.items():
        now, then, shown = [], [], ""
        for n in range(runs + 1):  # the first round warms up
            fresh = f"&run={run}-{n}" if "?" in path else f"?run={run}-{n}"
            ms_now, status, body = _timed(client, path + fresh)
            ms_then, status_then, _ = _timed(client, path + fresh + f"&as_of={quote(as_of)}")
            assert status in (200, 204) and status_then in (200, 204), (path, status, status_then)
            if n:
                now.append(ms_now)
                then.append(ms_then)
            shown = f"{json.loads(body)['numberReturned']:,}" if "items" in path else f"{len(body):,} B"
        current, past = statistics.median(now), statistics.median(then)
        print(f"| {name} | {current:.1f} | {past:.1f} | {past / current:.2f} | {shown} |")


def main(url: str = typer.Option("http://127.0.0.1:8860", help="the server to measure"),
         tiles_count: int = typer.Option(500, "--tiles", help="tiles in the cold set"),
         runs: int = typer.Option(15, help="runs of each page")):
    db, run = database_url(), f"{time.time():.0f}"
    client = Client(url)
    tiles(client, db, tiles_count, run)
    busy = max((t for _, t in tile_set(db, tiles_count) if t.z == 14),
               key=lambda t: len(client(f"{our_path('city_components', t)}")[1]))
    pages(client, runs, _before_last_change(db), busy, run)


if __name__ == "__main__":
    typer.run(main)
