"""Right after a department's big load: a viewport's items page, and the whole layer's numberMatched.

    .venv/bin/python -m bench.after_load [--components 1000000] [--runs 15]

Two databases in one throwaway cluster ($TMPDIR/twin-bench-after-load), each with the district at its demo
size (20,000 components), analyzed as autovacuum would have analyzed it, then autovacuum turned off for the
components (so only the load's own work counts). Then the components of a sample of `--components` arrive:

- before: copied into the layer by COPY, as the ETL wrote them before it analyzed what it loaded (every
  trigger runs; nothing refreshes the statistics);
- after: loaded by the ETL (`etl.run.run_file`), which analyzes what it changed in bulk.

Against the real server on each: the z14 and z16 viewport pages of 1,000 features of issue 25, and the
unfiltered `items?limit=1` with its numberMatched, `--runs` times each (p50, ms), beside the SQL floor of the
count (the one-row read of twin.feature_count) and the count(*) it replaces.
"""

import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import typer

from bench.tile_peers import ours
from tests.etl_support import empty_database
from twin.db import migrate

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-after-load"
PAGES = {
    "z14 viewport page of 1,000": "bbox=120.390,31.490,120.417,31.510&limit=1000",
    "z16 viewport page of 1,000": "bbox=120.400,31.500,120.407,31.505&limit=1000",
    "whole layer, limit=1 (numberMatched)": "limit=1",
}
COLUMNS = "code, major_class, minor_class, class_name, status, owner_unit, street_code, installed_on, geom"


def district(url: str, data_dir: Path) -> None:
    """The district at its demo size, analyzed, autovacuum off for the components."""
    import os

    from etl.bundle import load_bundle
    from twin.db import sync_engine
    from twin.settings import get_settings

    os.environ |= {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(data_dir)}
    get_settings.cache_clear()
    sync_engine.cache_clear()
    migrate(url=url)
    failed = [r.error for _, _, r in load_bundle(sync_engine(), get_settings()) if r.status != "succeeded"]
    assert not failed, failed
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE layers.city_components")
        conn.execute("ALTER TABLE layers.city_components SET (autovacuum_enabled = off)")


def sample_components(components: int) -> Path:
    from etl.sample import generate

    out = BENCH_DIR / f"sample-{components}"
    path = out / "city_components.gpkg"
    if not path.exists():
        files = generate(out, components=components, seed=7)
        path = files["city_components"]
    return Path(path)


def timings(base: str, runs: int) -> dict[str, tuple[float, int | None]]:
    """Each page's p50 (ms) and its numberMatched."""
    result = {}
    with httpx.Client(base_url=base, timeout=120) as http:
        for name, query in PAGES.items():
            times, matched = [], None
            for n in range(runs + 1):  # the first warms up
                start = time.perf_counter()
                response = http.get(f"/collections/city_components/items?{query}")
                elapsed = (time.perf_counter() - start) * 1000
                assert response.status_code == 200, response.text[:300]
                matched = response.json().get("numberMatched")
                if n:
                    times.append(elapsed)
            result[name] = (statistics.median(times), matched)
    return result


def floors(url: str, runs: int) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        out = {}
        for name, sql in (("feature_count row", "SELECT features FROM twin.feature_count WHERE layer = 'city_components'"),
                          ("count(*)", "SELECT count(*) FROM layers.city_components")):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                conn.execute(sql).fetchone()
                times.append((time.perf_counter() - start) * 1000)
            out[name] = statistics.median(times)
    return out


def main(components: int = typer.Option(1_000_000, help="components in the department's file"),
         runs: int = typer.Option(15, help="runs of each request")):
    from etl.run import run_file
    from twin.cluster import Cluster
    from twin.db import sync_engine

    BENCH_DIR.mkdir(exist_ok=True)
    BENCH_DIR.chmod(0o755)  # the postgres OS user enters it
    cluster = Cluster(BENCH_DIR / "db")
    cluster.up()
    try:
        path = sample_components(components)
        urls = {way: empty_database(cluster.url(), f"after_load_{way}") for way in ("before", "after")}
        for way, url in urls.items():
            district(url, BENCH_DIR)
        started = time.monotonic()
        result = run_file(sync_engine(), "city_components", path, actor="bench")  # the engine is on "after"
        assert result.status == "succeeded", result.error
        print(f"ETL load of {result.counts['inserted']:,} components into 'after': {time.monotonic() - started:.0f} s")
        with psycopg.connect(urls["after"]) as source, psycopg.connect(urls["before"]) as target:
            started = time.monotonic()
            with source.cursor().copy(f"COPY (SELECT {COLUMNS} FROM layers.city_components WHERE fid > 20000 "
                                      "ORDER BY fid) TO STDOUT (FORMAT BINARY)") as out, \
                    target.cursor().copy(f"COPY layers.city_components ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as into:
                for chunk in out:
                    into.write(chunk)
            target.commit()
            print(f"COPY of the same rows into 'before': {time.monotonic() - started:.0f} s")
        figures = {}
        for way, url in urls.items():
            with ours(url, BENCH_DIR, BENCH_DIR / f"server-{way}.log") as base:
                figures[way] = timings(base, runs)
        print(f"\n{components:,} components loaded onto the 20,000 of the demo; p50 of {runs} runs (ms)\n")
        print("| request | before (statistics of 20,000) | after (the load analyzed) | numberMatched after |")
        print("| --- | ---: | ---: | ---: |")
        for name in PAGES:
            (before, _), (after, matched) = figures["before"][name], figures["after"][name]
            print(f"| {name} | {before:.1f} | {after:.1f} | {matched if matched is not None else '(none)'} |")
        print("\nSQL floor of the whole layer's count, p50 (ms): " +
              ", ".join(f"{name} {ms:.2f}" for name, ms in floors(urls["after"], runs).items()))
    finally:
        cluster.down()


if __name__ == "__main__":
    typer.run(main)
