"""The database's own share of a load, beside ogr2ogr's whole load (issue #3's "as fast as ogr2ogr" target).

    .venv/bin/python -m bench.etl_floor --data var/bench     # about two minutes

A fresh bench database (as bench/etl_load.py makes it) gets the million city components through our
ETL once; their stored rows are then copied out as CSV, in memory. Each round, in transactions that are
rolled back (the layer emptied with TRUNCATE first), the server alone stores those rows, no client
work at all:
- as our empty-layer load does: indexes dropped, COPY through the change-tracking triggers (a change
  row per feature, the tile-cell counts), the four indexes built again (primary key, natural key,
  GiST, updated_at);
- the same with the triggers disabled: what the table's shape costs without any history;
and ogr2ogr loads the same GeoPackage into a plain table (reading it, COPY, its GiST index).
Medians of the rounds.
"""

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
import typer
from psycopg import sql

from bench.etl_load import OUR_LOAD, _cluster, _database, _ogr2ogr, _python, _sample
from layers.store import _drop_indexes

COLUMNS = "code, major_class, minor_class, class_name, status, owner_unit, street_code, installed_on, geom"
LAYER = sql.SQL("layers.city_components")


def _stored(url: str, rows: bytes, triggers: bool) -> tuple[float, float]:
    """(COPY seconds, index seconds) of the rows into the emptied layer, rolled back."""
    with psycopg.connect(url) as conn, conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute("SELECT set_config('twin.actor', 'bench', true), twin.claim_change_log()")
        cur.execute("ALTER TABLE layers.city_components DISABLE TRIGGER USER")  # its guard refuses a TRUNCATE
        cur.execute("TRUNCATE layers.city_components")
        rebuild = _drop_indexes(cur, LAYER, "layers.city_components")
        if triggers:
            cur.execute("ALTER TABLE layers.city_components ENABLE TRIGGER USER")
        start = time.perf_counter()
        with cur.copy(f"COPY layers.city_components ({COLUMNS}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(rows)
        copied = time.perf_counter()
        for statement in rebuild:
            cur.execute(statement)
        return copied - start, time.perf_counter() - copied


def main(components: int = typer.Option(1_000_000, min=1), data: Path = typer.Option(Path("var/bench")),
         database_url: str = typer.Option(None, help="a PostGIS to create the bench database in"),
         rounds: int = typer.Option(3, min=1)) -> None:
    full, _ = _sample(data, components)
    scratch = Path(tempfile.mkdtemp(prefix="twin-bench-"))
    server, cluster = _cluster(database_url, scratch)
    try:
        url = _database(server)
        _python(OUR_LOAD, url, str(full))
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            rows = bytearray()
            with cur.copy(f"COPY (SELECT {COLUMNS} FROM layers.city_components) TO STDOUT WITH (FORMAT csv)") as copy:
                for block in copy:
                    rows += block
        times = {"ogr": [], "tracked": [], "untracked": []}
        for _ in range(rounds):
            times["ogr"].append((_ogr2ogr(url, full), 0.0))
            times["tracked"].append(_stored(url, bytes(rows), triggers=True))
            times["untracked"].append(_stored(url, bytes(rows), triggers=False))
    finally:
        if cluster:
            cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    med = {name: tuple(statistics.median(part) for part in zip(*runs)) for name, runs in times.items()}
    (ogr, _), (tracked_copy, tracked_index), (bare_copy, bare_index) = med["ogr"], med["tracked"], med["untracked"]
    print(f"{components:,} city components, medians of {rounds} rounds (s)\n")
    print("| what | seconds |\n| --- | ---: |")
    print(f"| ogr2ogr, the whole load (reading the file, COPY, GiST index) | {ogr:.2f} |")
    print(f"| our table, server only: COPY with the triggers disabled | {bare_copy:.2f} |")
    print(f"| our table, server only: its four indexes built after the COPY | {bare_index:.2f} |")
    print(f"| our table, server only, no history: the two together | {bare_copy + bare_index:.2f} |")
    print(f"| our table, server only: COPY through the change-tracking triggers | {tracked_copy:.2f} |")
    print(f"| our table, server only, with history: COPY and indexes | {tracked_copy + tracked_index:.2f} |")
    print(f"\nthe database's share of our load / ogr2ogr's whole load: {(tracked_copy + tracked_index) / ogr:.2f}×; "
          f"without any history: {(bare_copy + bare_index) / ogr:.2f}×")


if __name__ == "__main__":
    typer.run(main)
