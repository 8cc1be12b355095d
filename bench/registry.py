"""Layers at run time (issue 23), side by side in one run on the tile bench's database (bench.tile_peers):

- how long registering a layer takes (POST /admin/layers, its DDL and catalog rows in one transaction), for
  the shapes of the shipped layers, and how soon every worker of a two-worker server then serves it (new
  connections in a row, each to either worker, all answering 200);
- a registered twin of `city_components` (the same spec under another id, its million rows copied through its
  triggers) against the built-in layer: cold tiles and items pages, asked in turns, per-tile medians.

    .venv/bin/python -m bench.registry
"""

import os
import statistics
import time

import httpx
import typer
from sqlalchemy import text

from bench import tile_peers
from bench.tiles import MERCATOR, Client, load, our_path, row, tile_set, timed
from layers.catalog import shipped
from twin.auth import create_key
from twin.cli import uvicorn_argv

app = typer.Typer(add_completion=False)
TWIN = "reg_components"
SHAPES = ("city_components", "rivers", "water_bodies", "cases", "alerts")
IN_A_ROW = 20


def _spec(shape: str, layer: str) -> str:
    return shipped()[shape].model_copy(update={"id": layer}).model_dump_json(exclude_defaults=True)


def _seen_everywhere(base: str, layer: str, since: float) -> float:
    """Seconds from `since` to the first of IN_A_ROW new connections in a row (each to either worker) that found
    the layer."""
    found, streak = 0, since
    while found < IN_A_ROW:
        with httpx.Client(base_url=base, timeout=10) as fresh:
            asked = time.monotonic()
            if fresh.get(f"/collections/{layer}").status_code == 200:
                streak, found = (asked if found == 0 else streak), found + 1
            else:
                found = 0
    return max(0.0, streak - since)


def _twin(engine, key: str, base: str) -> None:
    """The registered twin of city_components, with the same rows."""
    with engine.connect() as conn:
        known = conn.execute(text("SELECT 1 FROM twin.layer WHERE id = :id"), {"id": TWIN}).first()
    if known is None:
        answer = httpx.post(f"{base}/admin/layers", content=_spec("city_components", TWIN),
                            headers={"authorization": f"Bearer {key}"}, timeout=60)
        assert answer.status_code == 201, answer.text
    columns = ", ".join(["geom"] + [f.name for f in shipped()["city_components"].fields])
    with engine.begin() as conn:
        if conn.execute(text(f"SELECT (SELECT count(*) FROM layers.{TWIN}) = "
                             "(SELECT count(*) FROM layers.city_components)")).scalar():
            return
        print("  copying the components into the registered twin", flush=True)
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(text(f"DELETE FROM layers.{TWIN}"))
        conn.execute(text(f"INSERT INTO layers.{TWIN} ({columns}) SELECT {columns} FROM layers.city_components"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text(f"VACUUM ANALYZE layers.{TWIN}"))


@app.command()
def main(components: int = typer.Option(1_000_000, help="city components in the bench database"),
         count: int = typer.Option(300, "--tiles", help="tiles in the set"),
         rounds: int = typer.Option(4, help="times each tile is asked cold (the median counts)")):
    url, data_dir = tile_peers.bench_database(components, False)
    from twin.db import sync_engine

    engine = sync_engine()
    with engine.begin() as conn:
        key = create_key(conn, "信息中心", [], True)
    run = f"{time.time():.0f}"
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average " + load())
    port = tile_peers.free_port()
    base, env = f"http://127.0.0.1:{port}", os.environ | {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(data_dir)}
    with tile_peers.process(uvicorn_argv("127.0.0.1", port, workers=2), f"{base}/health", env,
                            data_dir / "run" / "registry.log"):
        print("\nRegistering a layer through POST /admin/layers on a two-worker server\n")
        print(f"| shape | fields | registration | then every worker serves it (from {IN_A_ROW} new connections in a row) |")
        print("| --- | ---: | ---: | ---: |")
        for shape in SHAPES:
            layer = f"reg_{shape[:12]}_{run}"
            started = time.monotonic()
            answer = httpx.post(f"{base}/admin/layers", content=_spec(shape, layer),
                                headers={"authorization": f"Bearer {key}"}, timeout=60)
            took = time.monotonic() - started
            assert answer.status_code == 201, answer.text
            seen = _seen_everywhere(base, layer, started + took)
            print(f"| {shape} | {len(shipped()[shape].fields)} | {took * 1000:.0f} ms | {seen * 1000:.0f} ms |")
            httpx.delete(f"{base}/admin/layers/{layer}", headers={"authorization": f"Bearer {key}"}, timeout=60)
        _twin(engine, key, base)
    cases = [t for _, t in tile_set(url, count)]
    with tile_peers.ours(url, data_dir, data_dir / "run" / "ours.log") as ours:
        client = Client(ours)
        layers = ("city_components", TWIN)
        for t in cases:  # the database's buffers and the server's plans, warmed alike
            for layer in layers:
                client(f"{our_path(layer, t)}?run={run}-warm")
        tiles = {layer: [[] for _ in cases] for layer in layers}
        items = {layer: [[] for _ in cases] for layer in layers}
        for n in range(rounds):
            for layer in (layers if n % 2 == 0 else layers[::-1]):
                for i, t in enumerate(cases):
                    ms, (status, _, headers) = timed(client, f"{our_path(layer, t)}?run={run}-{n}")
                    assert status in (200, 204) and headers.get("x-tile-cache") == "miss", (layer, status)
                    tiles[layer][i].append(ms)
                    west, south, east, north = MERCATOR.bounds(t)
                    ms, (status, _, _) = timed(client, f"/collections/{layer}/items?limit=100&bbox={west},{south},"
                                                       f"{east},{north}&run={run}-{n}")
                    assert status == 200, (layer, status)
                    items[layer][i].append(ms)
        for what, times in (("cold tiles", tiles), ("items pages (limit 100, the tile's bbox)", items)):
            medians = {layer: [statistics.median(v) for v in per] for layer, per in times.items()}
            print(f"\n{what}: built-in and registered in turns, the same {len(cases)} tiles, each the median of "
                  f"{rounds} rounds (ms)\n")
            print("| layer | p50 | p99 | mean | max |\n| --- | ---: | ---: | ---: | ---: |")
            for layer in layers:
                print(row(layer, medians[layer]))
            ratios = [r / b for r, b in zip(medians[TWIN], medians["city_components"])]
            print(f"\nregistered / built-in, per tile: median {statistics.median(ratios):.2f}")
    print(f"\nended {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average " + load())


if __name__ == "__main__":
    app()
