"""Spatial queries against the raw SQL floor, side by side in one run.

Each case asks the running server a question over HTTP and PostGIS the same question in the
plainest SQL that answers it, checks that both give the same number of rows, and prints the
median and 90th-percentile times. The server must serve the bundled district (`twin demo`).

    .venv/bin/python -m bench.queries --url http://127.0.0.1:8000 --runs 20
"""

import statistics
import time

import httpx
import psycopg
import typer

from twin.db import database_url

CASES = {
    "within: pollution sources within 500 m of every river (first page of 10,000, and all counted)": (
        "/query/within",
        {"layer": "pollution_sources", "distance": 500, "geometries": False, "limit": 10_000,
         "of": {"layer": "rivers", "where": {}}},
        lambda body: body["numberMatched"],
        # the plainest SQL that uses the index: envelopes widened by 500 m, then the geodesic test and distance
        "SELECT s.fid, min(ST_Distance(s.geom::geography, r.geom::geography)) FROM layers.pollution_sources s "
        "JOIN layers.rivers r ON s.geom && ST_Expand(r.geom, 500 / (110000 * cos(radians(least(greatest("
        "abs(ST_YMin(r.geom)), abs(ST_YMax(r.geom))) + 500 / 110000.0, 89)))), 500 / 110000.0) "
        "AND ST_DWithin(s.geom::geography, r.geom::geography, 500) GROUP BY s.fid",
    ),
    "aggregate: city components per street by status": (
        "/query/aggregate",
        {"layer": "city_components", "by": "streets", "group_by": "status"},
        lambda body: sum(1 for f in body["features"] for k, v in f["properties"].items()
                         if k.startswith("count:") and v),
        "SELECT st.fid, c.status, count(*), ST_AsGeoJSON(st.geom, 8) FROM layers.streets st "
        "JOIN layers.city_components c ON ST_Intersects(st.geom, c.geom) GROUP BY st.fid, c.status",
    ),
}


def _timed(run, runs: int) -> tuple[list[float], object]:
    result, times = None, []
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - start) * 1000)
    return times, result


def _summary(times: list[float]) -> str:
    ordered = sorted(times)
    return f"median {statistics.median(ordered):7.1f} ms   p90 {ordered[int(0.9 * (len(ordered) - 1))]:7.1f} ms"


def main(url: str = typer.Option("http://127.0.0.1:8000", help="the running server"),
         runs: int = typer.Option(20, min=1, help="timed runs per case, after one warm-up")) -> None:
    with httpx.Client(base_url=url, timeout=60) as http, psycopg.connect(database_url()) as conn:
        for name, (path, body, count, sql) in CASES.items():
            ask = lambda: http.post(path, json=body).raise_for_status().json()  # noqa: E731
            floor = lambda: conn.execute(sql).fetchall()  # noqa: E731
            ask(), floor()
            served, answer = _timed(ask, runs)
            raw, rows = _timed(floor, runs)
            same = "same rows" if count(answer) == len(rows) else f"ROWS DIFFER: {count(answer)} vs {len(rows)}"
            typer.echo(f"{name}\n  twin HTTP  {_summary(served)}\n  raw SQL    {_summary(raw)}   ({same})")


if __name__ == "__main__":
    typer.run(main)
