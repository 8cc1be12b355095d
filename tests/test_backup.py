"""`twin db backup` / `twin db restore` through the real CLI: a database with runs, quarantine, history and
keys round-trips, every table row for row, and a server on the restored database serves the same change
feed. (A private source database: the district the other modules read has no history yet, and this one
writes.)"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from etl.run import run_file
from layers.catalog import shipped
from layers.registry import register
from tests.etl_support import GEOD, REPO, component_codes, district_points, drop_database, engine_for, private_database
from tests.server_support import logged_server
from tests.test_etl_runs import components_csv
from twin.auth import create_key
from twin.backup import pg_tool

TWIN = [str(Path(sys.executable).with_name("twin"))]
SOURCE = "twin_backup_source"
SCRATCH = "twin_restored"
REGISTERED = shipped()["city_components"].model_copy(update={"id": "registered_trees"})
SCHEMAS = ["layers", "history", "twin"]


def twin(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"TWIN_DATABASE_URL": database_url, "TWIN_DATA_DIR": str(data_dir)}
    return subprocess.run([*TWIN, "db", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def said(result: subprocess.CompletedProcess) -> str:
    """What the command wrote to stderr, with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """table → (rows, md5 of all its rows in a fixed order), for every table of ours and alembic_version;
    identity positions and the privileges of the writers' function besides."""
    with psycopg.connect(url) as conn:
        tables = [f"{s}.{t}" for s, t in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s) ORDER BY 1, 2", [SCHEMAS])]
        out = {}
        for table in [*tables, "public.alembic_version"]:
            schema, name = table.split(".")
            quoted = psycopg.sql.Identifier(schema, name)
            out[table] = tuple(conn.execute(psycopg.sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t"
            ).format(quoted)).fetchone())
        out["identities"] = tuple(conn.execute("SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences "
                                               "WHERE schemaname = ANY(%s) ORDER BY 1", [SCHEMAS]).fetchall())
        out["claim acl"] = conn.execute("SELECT proacl::text FROM pg_proc WHERE oid = "
                                        "'twin.claim_change_log()'::regprocedure").fetchone()
    return out


@pytest.fixture(scope="module")
def source(database_url, tmp_path_factory):
    """A private database with every kind of record: three ETL runs (inserts, updates, deletes), rejected rows
    in quarantine, superseded versions in the history, a department key."""
    url = private_database(database_url, SOURCE)
    engine = engine_for(url)
    files = tmp_path_factory.mktemp("backup-source")
    codes = component_codes(700_000, 60)
    lon, lat = np.round(district_points(60, seed=7), 7)
    lon[:5], lat[:5] = lat[:5].copy(), lon[:5].copy()  # swapped axes: rejected, kept in quarantine
    runs = [run_file(engine, "city_components", components_csv(files / "a.csv", codes, lon, lat))]
    status = np.where(np.arange(60) % 6 == 0, "破损", "完好")
    runs.append(run_file(engine, "city_components", components_csv(files / "b.csv", codes, lon + 1e-4, lat, status)))
    runs.append(run_file(engine, "city_components", components_csv(files / "c.csv", codes[:50], lon[:50] + 1e-4,
                                                                   lat[:50], status[:50]), mode="replace"))
    assert [r.status for r in runs] == ["succeeded"] * 3
    assert (runs[0].counts["quarantined"], runs[1].counts["updated"], runs[2].counts["deleted"]) == (5, 55, 10)
    with engine.begin() as conn:
        create_key(conn, "城管局", ["city_components"])
        register(conn, REGISTERED, "test")  # a layer registered at run time: the catalog and its tables
    engine.dispose()
    yield url
    drop_database(database_url, SOURCE)


@pytest.fixture(scope="module")
def scratch(database_url):
    drop_database(database_url, SCRATCH)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{SCRATCH}"')
    yield database_url.rsplit("/", 1)[0] + f"/{SCRATCH}"
    drop_database(database_url, SCRATCH)


@pytest.fixture(scope="module")
def round_trip(source, data_dir, scratch, tmp_path_factory):
    """(backup file, fingerprint of the original, fingerprint of the restored copy)."""
    file = tmp_path_factory.mktemp("backup") / "district.dump"
    done = twin(source, data_dir, "backup", str(file))
    assert done.returncode == 0, done.stderr
    assert f"backed up to {file}" in done.stdout.replace("\n", "")
    original = fingerprint(source)
    restored = twin(scratch, data_dir, "restore", str(file))
    assert restored.returncode == 0, restored.stderr + restored.stdout
    return file, original, fingerprint(scratch)


def test_every_table_round_trips_row_for_row(round_trip):
    _, original, restored = round_trip
    assert restored == original
    counts = {table: value[0] for table, value in original.items() if table.count(".") == 1}
    assert (counts["layers.city_components"], counts["history.city_components"]) == (45, 55 + 10)
    assert (counts["twin.etl_run"], counts["twin.quarantine"], counts["twin.api_key"]) == (3, 5 * 3, 1)  # the 5 rejected rows, in each run
    assert counts["twin.change"] == 55 + 55 + 10 and counts["public.alembic_version"] == 1
    assert "=X/" in original["claim acl"][0] and not original["claim acl"][0].startswith("{=X")
    assert restored["claim acl"] == original["claim acl"]  # not executable by PUBLIC, after the restore too


def test_the_restored_database_serves_the_same_change_feed(round_trip, source, scratch, tmp_path):
    with psycopg.connect(source) as conn:
        expected = conn.execute("SELECT change_id, layer, fid, operation, version, actor, run_id FROM twin.change "
                                "ORDER BY change_id").fetchall()
        deleted = conn.execute("SELECT fid FROM twin.change WHERE operation = 'delete' LIMIT 1").fetchone()[0]
        moved = {fid: (x, y) for fid, x, y in conn.execute(
            "SELECT fid, ST_X(geom), ST_Y(geom) FROM history.city_components WHERE version = 1")}
    with logged_server(scratch, tmp_path, tmp_path / "restored.log") as base, \
            httpx.Client(base_url=base, timeout=60) as client:
        served, after = [], 0
        while True:
            page = client.get("/changes", params={"after": after, "limit": 50}).json()
            served += page["changes"]
            if not any(link["rel"] == "next" for link in page["links"]):
                break
            after = page["cursor"]
        history = client.get(f"/collections/city_components/items/{deleted}/history").json()
        assert client.get(f"/collections/{REGISTERED.id}").status_code == 200
    fields = ("id", "layer", "fid", "operation", "version", "actor", "run")
    assert [tuple(c.get(f) for f in fields) for c in served] == expected and len(expected) == 55 + 55 + 10
    # a deleted feature's whole life is served from the restored history
    assert [(v["version"], v["operation"]) for v in history["versions"]] == [(3, "delete"), (2, "update"),
                                                                            (1, "insert")]
    # an update's geometry shift is computed from the restored history: 1e-4° of longitude, here ~9.5 m
    for change in (c for c in served if c["operation"] == "update"):
        lon, lat = moved[change["fid"]]
        metres = GEOD.inv(lon, lat, lon + 1e-4, lat)[2]
        assert change["changed"]["geometry"]["shift_m"] == pytest.approx(metres, abs=0.01), change


def test_a_database_with_data_is_refused_unless_forced(round_trip, scratch, data_dir):
    file, original, _ = round_trip
    refused = twin(scratch, data_dir, "restore", str(file))
    assert refused.returncode == 1
    assert "already holds a twin database" in said(refused) and "--force" in said(refused)
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("UPDATE layers.city_components SET status = '丢失' WHERE fid IN "
                     "(SELECT fid FROM layers.city_components LIMIT 3)")
    forced = twin(scratch, data_dir, "restore", "--force", str(file))
    assert forced.returncode == 0, forced.stderr
    assert fingerprint(scratch) == original  # the rows added since are gone: the backup's state, exactly


@pytest.mark.parametrize("content", [b"", b"PGDMP" + os.urandom(2000), b"SELECT 1;\n"])
def test_a_corrupt_or_foreign_file_changes_nothing(round_trip, scratch, data_dir, tmp_path, content):
    bad = tmp_path / "bad.dump"
    bad.write_bytes(content)
    result = twin(scratch, data_dir, "restore", "--force", str(bad))
    assert result.returncode == 1 and "is not a backup in pg_dump's custom format" in said(result), result.stderr


def test_a_restore_failing_midway_changes_nothing(round_trip, scratch, data_dir, tmp_path):
    """A backup whose data is damaged past its table of contents fails part way through the forced restore,
    which, being one transaction, leaves the database as it was."""
    file, original, _ = round_trip
    damaged = tmp_path / "damaged.dump"
    for back in (1000, 2000, 4000, 8000):  # zeros over compressed table data, behind the table of contents
        data = bytearray(file.read_bytes())
        data[-back:-back + 200] = bytes(200)
        damaged.write_bytes(data)
        if subprocess.run([pg_tool("pg_restore"), "--list", str(damaged)], capture_output=True).returncode == 0:
            break
    result = twin(scratch, data_dir, "restore", "--force", str(damaged))
    assert result.returncode == 1 and "Restore failed, the database is as it was" in said(result), result.stderr
    assert fingerprint(scratch) == original


def test_a_forced_restore_replaces_only_the_twin_schemas(round_trip, scratch, data_dir):
    """Whatever else the database holds (here a table of the user's needing PostGIS) stays."""
    file, original, _ = round_trip
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.survey (geom geometry)")
        conn.execute("INSERT INTO public.survey VALUES ('POINT(120.4 31.5)')")
    try:
        result = twin(scratch, data_dir, "restore", "--force", str(file))
        assert result.returncode == 0, result.stderr
        assert fingerprint(scratch) == original
        with psycopg.connect(scratch) as conn:
            assert conn.execute("SELECT count(*) FROM public.survey").fetchone()[0] == 1
    finally:
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("DROP TABLE public.survey")


def test_backup_to_an_unwritable_place_leaves_no_file(database_url, data_dir, tmp_path):
    missing = tmp_path / "no-such-dir" / "x.dump"
    result = twin(database_url, data_dir, "backup", str(missing))
    assert result.returncode == 1 and "pg_dump failed" in said(result)
    assert not missing.parent.exists()
    result = twin(database_url, data_dir, "restore", str(tmp_path / "absent.dump"))
    assert result.returncode == 1 and "does not exist" in said(result)
