"""Point-in-time recovery of the 1M-component district (twin.pitr, pgBackRest), on a throwaway managed cluster
that archives its WAL: the disk growth of the load, the base backup, and the time to restore to a moment after
PostgreSQL is killed and its data directory deleted.

    .venv/bin/python -m bench.restore --components 1000000
"""

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psycopg
import typer

from bench.after_load import sample_components

BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-restore"
SIZES = ("SELECT pg_database_size(current_database()), pg_total_relation_size('layers.city_components'), "
         "pg_total_relation_size('history.city_components'), pg_total_relation_size('twin.change'), "
         "pg_current_wal_lsn()")


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def main(components: int = typer.Option(1_000_000, help="city components in the department's file")):
    from sqlalchemy import text

    from etl.run import run_file
    from tests.etl_support import engine_for
    from twin.db import migrate
    from twin.pitr import Archive
    from twin.settings import Settings

    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir()
    BENCH_DIR.chmod(0o755)  # the postgres OS user enters it
    archive = Archive(Settings(data_dir=BENCH_DIR / "var", backup_full_every_days=0))  # every backup full
    archive.up()
    try:
        url = archive.cluster.url()
        migrate(url=url)
        archive.ensure()
        path = sample_components(components)
        engine = engine_for(url)
        with psycopg.connect(url) as conn:
            before = conn.execute(SIZES).fetchone()
        started = time.monotonic()
        result = run_file(engine, "city_components", path, actor="bench")
        assert result.status == "succeeded", result.error
        loaded_s = time.monotonic() - started
        with psycopg.connect(url) as conn:
            after = conn.execute(SIZES).fetchone()
            wal = float(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", [after[4], before[4]]).fetchone()[0])
        database, layer, history, change = (a - b for a, b in zip(after[:4], before[:4]))
        print(f"load of {result.counts['inserted']:,} components: {loaded_s:.0f} s; WAL {mb(wal)}")
        print(f"database grew {mb(database)}: layer {mb(layer)}, history {mb(history)}, change log {mb(change)}")
        started = time.monotonic()
        backup = archive.backup()
        print(f"full base backup {backup.label}: {time.monotonic() - started:.0f} s, database "
              f"{mb(backup.database_bytes)}, {mb(backup.repository_bytes)} in the repository")
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('twin.actor', 'bench', true)"))
            conn.execute(text("UPDATE layers.city_components SET status = '破损' WHERE fid <= 1000"))
        time.sleep(1)
        with psycopg.connect(url) as conn:
            moment, expected = conn.execute("SELECT clock_timestamp(), (SELECT max(change_id) FROM twin.change)"
                                            ).fetchone()
        time.sleep(1)
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('twin.actor', 'bench', true)"))
            conn.execute(text("UPDATE layers.city_components SET status = '丢失' WHERE fid <= 2000"))
        engine.dispose()
        archive.flush(url)
        pid = int((archive.cluster.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        shutil.rmtree(archive.cluster.pgdata)
        started = time.monotonic()
        archive.restore(moment)
        restored_s = time.monotonic() - started
        with psycopg.connect(url) as conn:
            count, last, broken = conn.execute(
                "SELECT (SELECT count(*) FROM layers.city_components), (SELECT max(change_id) FROM twin.change), "
                "(SELECT count(*) FROM layers.city_components WHERE status = '破损' AND fid <= 1000)").fetchone()
        assert (count, last, broken) == (components, expected, 1000), (count, last, broken)
        window = archive.window()
        print(f"restore to {moment:%H:%M:%S.%f} after the data directory was deleted: {restored_s:.0f} s "
              f"({count:,} components, last change id {last:,} as at the moment); repository "
              f"{mb(window.repository_bytes)}")
    finally:
        archive.cluster.down()


if __name__ == "__main__":
    typer.run(main)
