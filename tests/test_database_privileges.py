"""Who may serialise the writers (migration 0005): not an analyst; every role that may write a layer does,
through the trigger, and its writes are recorded. On a private database (the tests write)."""

import threading

import psycopg
import pytest
from psycopg import errors, sql

from tests.etl_support import drop_database, engine_for, private_database
from tests.lock_support import wait_for_waiting_writer
from twin.analyst import analyst_url, grant_analyst_role

DB = "twin_privileges"
EDITOR = "twin_editor_test"
GEOM = "ST_GeomFromText('MULTIPOLYGON(((120.40 31.50, 120.41 31.50, 120.41 31.51, 120.40 31.50)))', 4490)"


@pytest.fixture(scope="module")
def db_url(database_url):
    url = private_database(database_url, DB)
    yield url
    drop_database(database_url, DB)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(EDITOR)))


@pytest.fixture(scope="module")
def analyst(db_url):
    engine = engine_for(db_url)
    with engine.begin() as conn:
        password = grant_analyst_role(conn, "twin_analyst_privileges")
    engine.dispose()
    return analyst_url(db_url, "twin_analyst_privileges", password)


@pytest.fixture(scope="module")
def editor(db_url):
    """A role that is neither superuser nor owner, allowed to write layers.streets and its history (a DBA's
    working role, say)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(EDITOR)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'editor-pw' NOSUPERUSER").format(sql.Identifier(EDITOR)))
        for statement in ("GRANT USAGE ON SCHEMA layers, history, twin TO {}",
                          "GRANT SELECT, INSERT, UPDATE, DELETE ON layers.streets TO {}",
                          "GRANT SELECT, INSERT ON history.streets, twin.change TO {}"):
            conn.execute(sql.SQL(statement).format(sql.Identifier(EDITOR)))
    base, name = db_url.rsplit("/", 1)
    return f"postgresql://{EDITOR}:editor-pw@{base.rsplit('@', 1)[1]}/{name}"


def _streets_changes(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT operation, actor FROM twin.change WHERE layer = 'streets' "
                            "ORDER BY change_id").fetchall()


@pytest.mark.parametrize("statement", [
    "SELECT twin.claim_change_log()",
    "LOCK TABLE twin.writer_lock IN EXCLUSIVE MODE",
    "LOCK TABLE twin.writer_lock IN ACCESS SHARE MODE",
    "SELECT twin.begin_change()",
])
def test_an_analyst_cannot_take_the_writers_lock(analyst, statement):
    with psycopg.connect(analyst) as conn:
        conn.execute("SET TRANSACTION READ WRITE")
        with pytest.raises((errors.InsufficientPrivilege, errors.FeatureNotSupported)):
            conn.execute(statement)


def test_the_old_advisory_lock_no_longer_stalls_writers(analyst, db_url):
    """An analyst may still take any advisory lock (PostgreSQL grants those to everyone): writers no
    longer use one, so a write goes through while the analyst holds the former writers' key."""
    with psycopg.connect(analyst) as held, psycopg.connect(db_url) as writer:
        held.execute("SELECT pg_advisory_xact_lock(1953982830)")
        writer.execute("SET lock_timeout = '2s'")
        writer.execute("INSERT INTO layers.streets (code, name, geom) VALUES ('P1', '锁测试', " + GEOM + ")")
        writer.commit()
    assert _streets_changes(db_url)[-1][0] == "insert"


def test_an_editor_role_writes_are_serialised_and_recorded(editor, db_url):
    with psycopg.connect(editor) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT twin.claim_change_log()")
    before = len(_streets_changes(db_url))
    with psycopg.connect(editor) as conn:
        conn.execute("INSERT INTO layers.streets (code, name, geom) VALUES ('E1', '编辑街道', " + GEOM + ")")
        conn.execute("UPDATE layers.streets SET name = '编辑街道二' WHERE code = 'E1'")
        conn.commit()
        conn.execute("DELETE FROM layers.streets WHERE code = 'E1'")
        conn.commit()
    assert _streets_changes(db_url)[before:] == [("insert", f"sql:{EDITOR}"), ("update", f"sql:{EDITOR}"),
                                                 ("delete", f"sql:{EDITOR}")]
    with psycopg.connect(db_url) as conn:
        versions = conn.execute("SELECT version, name FROM history.streets WHERE code = 'E1' ORDER BY version").fetchall()
    assert versions == [(1, "编辑街道"), (2, "编辑街道二")]

    # the editor's open write holds the writers' lock: the owner's write waits for its commit
    events = []
    with psycopg.connect(editor) as first:
        first.execute("INSERT INTO layers.streets (code, name, geom) VALUES ('E2', '先写', " + GEOM + ")")

        def second() -> None:
            with psycopg.connect(db_url) as conn:
                conn.execute("INSERT INTO layers.streets (code, name, geom) VALUES ('E3', '后写', " + GEOM + ")")
                conn.commit()
            events.append("second committed")

        thread = threading.Thread(target=second)
        thread.start()
        waiting = wait_for_waiting_writer(db_url)
        assert any("'E3'" in query for query in waiting), waiting
        assert events == [], "a second writer went ahead while the first held the writers' lock"
        events.append("first committing")
        first.commit()
        thread.join(timeout=30)
    assert events == ["first committing", "second committed"]
    with psycopg.connect(db_url) as conn:
        order = conn.execute("SELECT code FROM twin.change c JOIN layers.streets s USING (fid) "
                             "WHERE c.layer = 'streets' AND s.code IN ('E2', 'E3') ORDER BY change_id").fetchall()
    assert order == [("E2",), ("E3",)]
