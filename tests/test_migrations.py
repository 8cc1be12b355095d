"""Alembic owns the schema: upgrade and downgrade on an empty and on a loaded database."""

import psycopg
import pytest
from sqlalchemy import text

from layers.catalog import SQL_TYPES, catalog
from tests.etl_support import drop_database, empty_database
from twin.db import current_revision, downgrade, head_revision, migrate


@pytest.fixture
def scratch_url(database_url):
    """A separate database in the test cluster."""
    yield empty_database(database_url, "twin_migrations")
    drop_database(database_url, "twin_migrations")


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                            "WHERE table_schema IN ('twin', 'layers')").fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade_on_an_empty_database(scratch_url):
    migrate(url=scratch_url)
    assert current_revision(scratch_url) == head_revision()
    assert {"twin.api_key", "twin.etl_run", "twin.quarantine", "layers.city_components"} <= _tables(scratch_url)
    downgrade("base", url=scratch_url)
    assert current_revision(scratch_url) is None and _tables(scratch_url) == set()
    migrate(url=scratch_url)
    assert current_revision(scratch_url) == head_revision()


def test_downgrade_and_upgrade_on_a_loaded_database(scratch_url):
    migrate(url=scratch_url)
    with psycopg.connect(scratch_url) as conn:
        conn.execute("INSERT INTO layers.districts (code, name, geom) VALUES "
                     "('320214', '新吴区', ST_Multi(ST_MakeEnvelope(120.3, 31.4, 120.6, 31.6, 4490)))")
    downgrade("0001", url=scratch_url)
    assert not any(t.startswith("layers.") for t in _tables(scratch_url))
    migrate(url=scratch_url)
    with psycopg.connect(scratch_url) as conn:
        assert conn.execute("SELECT count(*) FROM layers.districts").fetchone() == (0,)


def test_every_layer_table_matches_its_spec(engine):
    with engine.connect() as conn:
        for spec in catalog().values():
            if spec.kind == "raster":
                continue
            columns = dict(conn.execute(text(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"), {"t": spec.table}).all())
            for field in spec.fields:
                expected = conn.execute(text(f"SELECT format_type(CAST('{SQL_TYPES[field.type]}' AS regtype), NULL)")).scalar()
                assert columns.get(field.name) == expected, (spec.id, field.name)
            assert ("geom" in columns) == (spec.geometry is not None), spec.id
            unique = conn.execute(text(
                "SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_constraint c "
                "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
                "WHERE c.conrelid = CAST(:t AS regclass) AND c.contype = 'u' GROUP BY c.oid"),
                {"t": spec.table}).scalars().all()
            assert sorted(spec.key) in [sorted(u) for u in unique], spec.id
