"""ETL load, side by side: a million city components from one GeoPackage, in one run, on one PostGIS.

- ours: `twin etl run city_components FILE` (read, map fields, validate, convert, COPY, and the change
  tracking triggers writing one `twin.change` row per feature) into the empty layer;
- ogr2ogr: GDAL's `ogr2ogr -f PostgreSQL` with PG_USE_COPY=YES into a plain table (GiST index, no
  validation, no history);
- to_postgis: geopandas `read_file` + `GeoDataFrame.to_postgis` into a plain table, then the same GiST
  index ogr2ogr builds;
- reload: the same file with 1% of the rows changed, through our ETL (upsert: exactly those rows update);
- floor: COPY of the rows we stored, as CSV from memory, into a copy of the layer's table with the same
  indexes and no triggers: what the database needs without reading, validation or the change log.

Our loads run in a subprocess that reports its peak RSS (resource.getrusage). ogr2ogr comes from
Debian's gdal-bin, installed for this benchmark only: `apt-get install -y gdal-bin`. With --before DIR
(another checkout, e.g. `git archive` of an older commit), that tree's load runs first into its own fresh
database, for a before/after in one run.

    .venv/bin/python -m bench.etl_load --components 1000000 [--data var/bench] [--database-url URL] [--before DIR]

Without --database-url a throwaway PostGIS cluster is started (and destroyed) in a temp directory.
The GeoPackage comes from `etl.sample.generate` and is kept in --data for the next run.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyogrio
import typer

from twin.cluster import Cluster
from twin.db import migrate

DB = "twin_bench_etl"
OUR_LOAD = """
import json, resource, sys, time
from sqlalchemy import create_engine, text
from etl.run import run_file
engine = create_engine(sys.argv[1].replace("postgresql://", "postgresql+psycopg://", 1))
start = time.perf_counter()
result = run_file(engine, "city_components", sys.argv[2], actor="bench")
seconds = time.perf_counter() - start
with engine.connect() as conn:
    changes = conn.execute(text("SELECT count(*) FROM twin.change WHERE run_id = :id"), {"id": result.run_id}).scalar()
print(json.dumps({"seconds": seconds, "counts": result.counts, "error": result.error, "changes": changes,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
TO_POSTGIS = """
import sys, time
import geopandas as gpd
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1].replace("postgresql://", "postgresql+psycopg://", 1))
start = time.perf_counter()
frame = gpd.read_file(sys.argv[2], engine="pyogrio")
frame.to_postgis("gp_components", engine, schema="bench", if_exists="replace")
with engine.begin() as conn:
    conn.execute(text("CREATE INDEX ON bench.gp_components USING gist (geometry)"))
print(time.perf_counter() - start)
"""


def _python(code: str, *args: str, tree: Path | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=tree or Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout.strip().splitlines()[-1]


def _sample(data: Path, components: int) -> tuple[Path, Path]:
    """The generated GeoPackage and a copy with 1% of its rows changed (status and owner)."""
    from etl.sample import generate

    data.mkdir(parents=True, exist_ok=True)
    full = data / f"city_components_{components}.gpkg"
    changed = data / f"city_components_{components}_1pct.gpkg"
    if not full.exists():
        files = generate(data / "sample", components=components, days=1)
        shutil.move(files["city_components"], full)
    if not changed.exists():
        frame = pyogrio.read_dataframe(full, use_arrow=True)
        rows = frame.index[::100]
        frame.loc[rows, "status"] = frame.loc[rows, "status"].map(lambda s: "破损" if s != "破损" else "完好")
        pyogrio.write_dataframe(frame, changed, layer="city_components", use_arrow=True)
    return full, changed


def _ogr2ogr(url: str, path: Path) -> float:
    if not shutil.which("ogr2ogr"):
        raise RuntimeError("ogr2ogr not found: apt-get install -y gdal-bin")
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    pg = " ".join(f"{k}={v}" for k, v in conninfo.items() if k in ("host", "port", "dbname", "user", "password"))
    start = time.perf_counter()
    subprocess.run(["ogr2ogr", "-f", "PostgreSQL", f"PG:{pg}", str(path), "city_components",
                    "-nln", "bench.ogr_components", "-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST",
                    "-overwrite"], check=True, env=os.environ | {"PG_USE_COPY": "YES"})
    return time.perf_counter() - start


def _floor(url: str) -> float:
    columns = "code, major_class, minor_class, class_name, status, owner_unit, street_code, installed_on, geom"
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE bench.floor (LIKE layers.city_components INCLUDING ALL)")
        rows = bytearray()
        with cur.copy(f"COPY (SELECT {columns} FROM layers.city_components) TO STDOUT WITH (FORMAT csv)") as copy:
            for block in copy:
                rows += block
        start = time.perf_counter()
        with cur.copy(f"COPY bench.floor ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(rows)
        conn.commit()
        return time.perf_counter() - start


def _cluster(url: str | None, scratch: Path) -> tuple[str, Cluster | None]:
    if url is not None:
        return url, None
    scratch.chmod(0o755)
    cluster = Cluster(scratch / "db")
    cluster.up()
    return cluster.url(), cluster


def _database(url: str) -> str:
    """A fresh, migrated bench database on the server of `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    bench_url = f"{url.rsplit('/', 1)[0]}/{DB}"
    migrate(url=bench_url)
    with psycopg.connect(bench_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bench")
    return bench_url


def main(components: int = typer.Option(1_000_000, min=1), data: Path = typer.Option(Path("var/bench")),
         database_url: str = typer.Option(None, help="a PostGIS to create the bench database in"),
         before: Path = typer.Option(None, help="another checkout whose load runs first, for before/after")) -> None:
    full, changed = _sample(data, components)
    scratch = Path(tempfile.mkdtemp(prefix="twin-bench-"))
    server, cluster = _cluster(database_url, scratch)
    try:
        if before:
            earlier = json.loads(_python(OUR_LOAD, _database(server), str(full.resolve()), tree=before))
            assert earlier["error"] is None and earlier["counts"]["inserted"] == components, earlier
        url = _database(server)
        ours = json.loads(_python(OUR_LOAD, url, str(full)))
        assert ours["error"] is None and ours["counts"]["inserted"] == components, ours
        floor = _floor(url)
        ogr = _ogr2ogr(url, full)
        geopandas = float(_python(TO_POSTGIS, url, str(full)))
        reload = json.loads(_python(OUR_LOAD, url, str(changed)))
        expected = len(range(0, components, 100))
        assert reload["counts"]["updated"] == expected and reload["changes"] == expected, reload
    finally:
        if cluster:
            cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    rate = lambda seconds: f"{components / seconds:,.0f} rows/s"  # noqa: E731
    print(f"| load of {components:,} points | seconds | rate | peak RSS |")
    print("| --- | ---: | ---: | ---: |")
    if before:
        print(f"| before: {before} (validated, change log: {earlier['changes']:,} rows) | "
              f"{earlier['seconds']:.1f} | {rate(earlier['seconds'])} | {earlier['peak_rss_mib']:,.0f} MiB |")
    print(f"| ours (validated, change log: {ours['changes']:,} rows) | {ours['seconds']:.1f} | "
          f"{rate(ours['seconds'])} | {ours['peak_rss_mib']:,.0f} MiB |")
    print(f"| ogr2ogr -f PostgreSQL, PG_USE_COPY=YES | {ogr:.1f} | {rate(ogr)} | |")
    print(f"| geopandas to_postgis (+ GiST index) | {geopandas:.1f} | {rate(geopandas)} | |")
    print(f"| floor: COPY into the layer's table shape, no triggers | {floor:.1f} | {rate(floor)} | |")
    print(f"| ours, reload with 1% changed ({reload['counts']['updated']:,} updated) | {reload['seconds']:.1f} | "
          f"{rate(reload['seconds'])} | {reload['peak_rss_mib']:,.0f} MiB |")
    print(f"\nours / ogr2ogr time: {ours['seconds'] / ogr:.2f}×; to_postgis / ours: {geopandas / ours['seconds']:.2f}×; "
          f"reload / load: {reload['seconds'] / ours['seconds']:.2f}×")


if __name__ == "__main__":
    typer.run(main)
