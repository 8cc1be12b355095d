"""`twin db analyst-role`: a read-only role for analysts' SQL, made through the CLI against the real PostGIS."""

import psycopg
import pytest
from psycopg import errors
from typer.testing import CliRunner

from twin.analyst import AnalystRoleError, grant_analyst_role
from twin.cli import app


def analyst_role(*args: str) -> str:
    result = CliRunner().invoke(app, ["db", "analyst-role", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def analyst_url(loaded):
    return analyst_role()


def test_the_role_reads_layers_history_and_the_change_log(analyst_url, engine):
    with engine.connect() as conn:
        expected = [conn.exec_driver_sql(sql).scalar() for sql in (
            "SELECT count(*) FROM layers.city_components", "SELECT count(*) FROM history.city_components",
            "SELECT count(*) FROM twin.change", "SELECT count(*) FROM twin.etl_run")]
    assert analyst_url.startswith("postgresql://twin_analyst:")
    with psycopg.connect(analyst_url) as conn:
        got = [conn.execute(sql).fetchone()[0] for sql in (
            "SELECT count(*) FROM layers.city_components", "SELECT count(*) FROM history.city_components",
            "SELECT count(*) FROM twin.change", "SELECT count(*) FROM twin.etl_run")]
        near = conn.execute("SELECT count(*) FROM layers.pollution_sources s JOIN layers.rivers r "
                            "ON ST_DWithin(s.geom::geography, r.geom::geography, 500)").fetchone()[0]
    assert got == expected and expected[0] > 0 and near > 0


@pytest.mark.parametrize("statement", [
    "INSERT INTO layers.streets (code, name) VALUES ('x', 'x')",
    "UPDATE layers.city_components SET status = '丢失'",
    "DELETE FROM layers.rivers",
    "DELETE FROM twin.change",
    "INSERT INTO history.streets (fid, code, name) VALUES (999999, 'x', 'x')",
    "CREATE TABLE public.scratch (a int)",
    "CREATE TABLE layers.scratch (a int)",
    "DROP TABLE layers.streets",
    "ALTER TABLE layers.streets ADD COLUMN x int",
    "TRUNCATE layers.streets",
    "GRANT SELECT ON twin.api_key TO twin_analyst",
])
def test_the_role_cannot_change_anything(analyst_url, engine, statement):
    with engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT count(*), max(updated_at) FROM layers.streets").one()
    with psycopg.connect(analyst_url) as conn:
        # even in an explicitly read-write transaction, privileges refuse the write
        conn.execute("SET TRANSACTION READ WRITE")
        with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction, errors.WrongObjectType)):
            conn.execute(statement)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), max(updated_at) FROM layers.streets").one() == before
        assert conn.exec_driver_sql("SELECT to_regclass('layers.scratch'), to_regclass('public.scratch')").one() \
            == (None, None)


def test_the_role_cannot_read_the_api_keys(analyst_url):
    with psycopg.connect(analyst_url) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT secret_hash FROM twin.api_key")
    with psycopg.connect(analyst_url) as conn:
        grants = conn.execute("SELECT has_table_privilege('twin.api_key', 'SELECT'), "
                              "has_table_privilege('twin.api_key', 'UPDATE')").fetchone()
    assert grants == (False, False)


def test_sessions_are_read_only_by_default(analyst_url):
    with psycopg.connect(analyst_url) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"


def test_refreshing_rotates_the_password(analyst_url):
    fresh = analyst_role()
    assert fresh != analyst_url
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(analyst_url)
    with psycopg.connect(fresh) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "twin_analyst"


def test_another_name_and_refused_names(engine, loaded):
    url = analyst_role("--name", "gis_team")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM layers.streets").fetchone()[0]
    for bad in ("Robert'); DROP TABLE layers.streets;--", "pg_monitor", "x" * 70, ""):
        with engine.begin() as conn, pytest.raises(AnalystRoleError):
            grant_analyst_role(conn, bad)
    with engine.connect() as conn:
        me = conn.exec_driver_sql("SELECT current_user").scalar()
    result = CliRunner().invoke(app, ["db", "analyst-role", "--name", me])
    assert result.exit_code == 1 and "server itself" in result.output
