"""Feature pages (OGC API Features items) side by side: this server, tipg, and the raw SQL floor.

Each case fetches one page over HTTP from the server and, when --tipg is given, from a tipg
serving the same database (collection ids `layers.<layer>`), checks both return the same
number of features, and times PostGIS writing the same page of GeoJSON features in one
statement (the floor: no count, no HTTP). Then the bbox page's throughput under --clients
concurrent clients, for both servers.

    .venv/bin/python -m bench.features --url http://127.0.0.1:8000 --tipg http://127.0.0.1:8081 --runs 20

tipg is not a dependency; run it from its own environment, e.g.
    DATABASE_URL=... TIPG_DB_SCHEMAS='["layers"]' TIPG_MAX_FEATURES_PER_QUERY=10000 uvicorn tipg.main:app --port 8081
"""

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import typer

from twin.db import database_url

CASES = [  # layer, query string, the same page as plain SQL
    ("city_components", "limit=1000", "SELECT * FROM layers.city_components ORDER BY fid LIMIT 1000"),
    ("city_components", "limit=1000&offset=2000",
     "SELECT * FROM layers.city_components ORDER BY fid LIMIT 1000 OFFSET 2000"),
    ("city_components", "limit=1000&bbox=120.35,31.45,120.45,31.55",
     "SELECT * FROM layers.city_components WHERE ST_Intersects(geom, ST_MakeEnvelope(120.35, 31.45, 120.45, 31.55, "
     "4490)) ORDER BY fid LIMIT 1000"),
    ("grids", "limit=1000", "SELECT * FROM layers.grids ORDER BY fid LIMIT 1000"),
    ("roads", "limit=1000", "SELECT * FROM layers.roads ORDER BY fid LIMIT 1000"),
]
# The floor: PostGIS writes the page's GeoJSON features in one statement, no count, no HTTP.
FLOOR = "SELECT count(*), string_agg(ST_AsGeoJSON(p.*, 'geom', 8)::text, ',') FROM ({}) p"


def _timed(run, runs: int) -> tuple[list[float], object]:
    result, times = run(), []  # the first call warms up
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - start) * 1000)
    return times, result


def _median(times: list[float]) -> str:
    return f"{statistics.median(times):7.1f} ms"


def _throughput(get, clients: int, seconds: float) -> float:
    """Pages per second with `clients` threads each fetching pages for `seconds`."""
    deadline = time.perf_counter() + seconds

    def client() -> int:
        done = 0
        with httpx.Client(timeout=60) as http:
            while time.perf_counter() < deadline:
                get(http)
                done += 1
        return done

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(lambda _: client(), range(clients))) / seconds


def main(url: str = typer.Option("http://127.0.0.1:8000", help="this server"),
         tipg: str = typer.Option("", help="a tipg serving the same database (optional)"),
         runs: int = typer.Option(20, min=1, help="timed runs per case, after one warm-up"),
         clients: int = typer.Option(8, min=1, help="concurrent clients for the throughput of the bbox page"),
         seconds: float = typer.Option(20, help="how long each throughput run lasts")) -> None:
    with httpx.Client(timeout=60) as http, psycopg.connect(database_url()) as conn:
        for layer, query, sql in CASES:
            page = lambda base, collection: http.get(  # noqa: E731
                f"{base}/collections/{collection}/items?{query}").raise_for_status().json()["numberReturned"]
            ours, returned = _timed(lambda: page(url, layer), runs)
            floor, (rows, _) = _timed(lambda: conn.execute(FLOOR.format(sql)).fetchone(), runs)
            line = f"{layer} {query}: {returned} features   ours {_median(ours)}   SQL floor {_median(floor)}"
            if tipg:
                theirs, same = _timed(lambda: page(tipg, f"layers.{layer}"), runs)
                assert same == returned, f"tipg returned {same} features, we {returned}"
                line += f"   tipg {_median(theirs)}"
            assert rows == returned, f"SQL floor returned {rows} features, we {returned}"
            print(line, f"  ours p99 {statistics.quantiles(ours, n=100)[98]:7.1f} ms" if len(ours) > 1 else "")
        layer, query, _ = next(case for case in CASES if "bbox" in case[1])
        for name, base, collection in (("ours", url, layer), ("tipg", tipg, f"layers.{layer}")):
            if base:
                rate = _throughput(lambda h: h.get(f"{base}/collections/{collection}/items?{query}").raise_for_status(),
                                   clients, seconds)
                print(f"throughput, {clients} clients, {layer} {query}: {name} {rate:6.1f} pages/s")


if __name__ == "__main__":
    typer.run(main)
