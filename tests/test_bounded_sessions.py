"""Bounded sessions (migration 0014, `twin db analyst-role`): an analyst's runaway query is stopped, a transaction
left idle is cut off with its snapshot, connections are limited, and a reader never blocks a writer. The app's
own role cuts only idle transactions. On a private database (the writer test writes)."""

import time

import psycopg
import pytest
from psycopg import errors, sql
from sqlalchemy import create_engine
from typer.testing import CliRunner

from etl.run import run_file
from tests.etl_support import component_codes, district_points, drop_database, engine_for, private_database
from tests.test_etl_runs import components_csv
from twin.analyst import SessionBounds, analyst_url, grant_analyst_role
from twin.cli import app

DB = "twin_bounded"
ROLES = ("twin_bounded_cli", "twin_bounded_runaway", "twin_bounded_idle", "twin_bounded_few", "twin_bounded_reader")


@pytest.fixture(scope="module")
def db_url(database_url):
    url = private_database(database_url, DB)
    yield url
    drop_database(database_url, DB)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in ROLES:
            conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role))
                         if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() else
                         sql.SQL("SELECT 1"))


def analyst(db_url: str, role: str, bounds: SessionBounds) -> str:
    engine = engine_for(db_url)
    with engine.begin() as conn:
        password = grant_analyst_role(conn, role, bounds)
    engine.dispose()
    return analyst_url(db_url, role, password)


def shown(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return tuple(conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "statement_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout"))


def test_the_cli_bounds_an_analyst_as_the_settings_say_unless_told(database_url, db_url):
    def made(*options: str) -> str:
        result = CliRunner().invoke(app, ["db", "analyst-role", "--name", "twin_bounded_cli", *options])
        assert result.exit_code == 0, result.output
        return result.stdout.strip().splitlines()[-1]

    assert shown(made()) == ("5min", "10min", "1h")
    url = made("--statement-timeout", "7", "--idle-in-transaction-timeout", "0", "--connection-limit", "3")
    assert shown(url) == ("7s", "0", "1h")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'twin_bounded_cli'").fetchone() == (3,)


def test_the_app_role_cuts_only_idle_transactions(database_url):
    """No statement timeout at the role (the server sets its own per session; the ETL lifts it for loads)."""
    assert shown(database_url) == ("0", "10min", "0")


def test_a_runaway_query_is_stopped(db_url):
    url = analyst(db_url, "twin_bounded_runaway", SessionBounds(1, 0, 0, 5))
    with psycopg.connect(url) as conn:
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT count(*) FROM generate_series(1, 10000000000)")
        assert time.monotonic() - started < 10


def test_an_idle_transaction_is_cut_off_and_its_snapshot_released(db_url):
    url = analyst(db_url, "twin_bounded_idle", SessionBounds(0, 1, 0, 5))
    with psycopg.connect(url) as conn:
        conn.execute("SELECT count(*) FROM twin.change")  # a transaction holding a snapshot
        time.sleep(2.5)
        with pytest.raises(errors.IdleInTransactionSessionTimeout):
            conn.execute("SELECT 1")
    with psycopg.connect(db_url) as conn:
        held = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'twin_bounded_idle'").fetchone()
    assert held == (0,)


def test_an_analyst_has_so_many_connections_at_most(db_url):
    url = analyst(db_url, "twin_bounded_few", SessionBounds(0, 0, 0, 2))
    with psycopg.connect(url), psycopg.connect(url):
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(url)


def test_a_reader_never_blocks_writers(db_url, tmp_path):
    """An analyst's open transaction over the layer, its history and the change log; the ETL inserts and then
    updates the layer meanwhile, with a lock wait of 5 s at most: neither waits, and the reader keeps its
    snapshot until it ends its transaction."""
    url = analyst(db_url, "twin_bounded_reader", SessionBounds(0, 0, 0, 5))
    writer = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           connect_args={"options": "-c timezone=UTC -c lock_timeout=5s"})
    codes = component_codes(900_000, 30)
    lon, lat = district_points(30, seed=5)
    with psycopg.connect(url) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        seen = reader.execute("SELECT (SELECT count(*) FROM layers.city_components), "
                              "(SELECT count(*) FROM history.city_components), "
                              "(SELECT count(*) FROM twin.change)").fetchone()
        started = time.monotonic()
        for name, status in (("a.csv", "完好"), ("b.csv", "破损")):
            result = run_file(writer, "city_components", components_csv(tmp_path / name, codes, lon, lat, status))
            assert result.status == "succeeded", result.error
        assert time.monotonic() - started < 30
        assert reader.execute("SELECT count(*) FROM layers.city_components").fetchone()[0] == seen[0]
        reader.commit()
        now = reader.execute("SELECT (SELECT count(*) FROM layers.city_components), "
                             "(SELECT count(*) FROM history.city_components), "
                             "(SELECT count(*) FROM twin.change)").fetchone()
    writer.dispose()
    assert now == (seen[0] + 30, seen[1] + 30, seen[2] + 60)
