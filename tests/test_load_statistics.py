"""A bulk load leaves the planner fresh statistics: the page of a viewport right after a load is planned with
the geometry index, without waiting for autovacuum (issue 25: 1.3 s a page until autovacuum came round).

The statistics are made to mislead first: the layer is analyzed while it holds a few components, all inside the
viewport, so the viewport seems to match every row. Then many components outside it are loaded with autovacuum
off. Loaded by plain SQL (the control), the planner still believes the old statistics and reads the layer in fid
order; loaded by the ETL, it finds the few rows through the geometry index."""

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from etl.run import run_file
from tests.etl_support import component_codes, database_fixture

FEW, MANY = 200, 30_000
VIEWPORT = (120.390, 31.490, 120.417, 31.510)  # the z14 viewport of issue 25
PAGE = ("EXPLAIN (FORMAT JSON) SELECT fid, code, status, geom FROM layers.city_components "
        "WHERE geom && ST_MakeEnvelope(120.390, 31.490, 120.417, 31.510, 4490) ORDER BY fid LIMIT 1000")

db = database_fixture("twin_load_statistics")


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def geometry_index_used(engine) -> bool:
    with engine.connect() as conn:
        plan = conn.execute(text(PAGE)).scalar_one()[0]["Plan"]
    return any(n.get("Index Name") == "city_components_geom_idx" for n in nodes(plan))


def components(path, first: int, n: int, inside: bool, seed: int):
    rng = np.random.default_rng(seed)
    if inside:
        lon, lat = rng.uniform(VIEWPORT[0], VIEWPORT[2], n), rng.uniform(VIEWPORT[1], VIEWPORT[3], n)
    else:  # the district east of the viewport
        lon, lat = rng.uniform(120.45, 120.57, n), rng.uniform(31.46, 31.61, n)
    pd.DataFrame({"部件标识码": component_codes(first, n), "部件状态": "完好", "经度": lon, "纬度": lat}).to_csv(
        path, index=False)
    return path


@pytest.fixture
def misled(db, tmp_path):
    """The layer with FEW components in the viewport, analyzed, and autovacuum off."""
    with db.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components"))
        conn.execute(text("ALTER TABLE layers.city_components SET (autovacuum_enabled = off)"))
    assert run_file(db, "city_components", components(tmp_path / "few.csv", 0, FEW, True, 1)).status == "succeeded"
    with db.begin() as conn:
        conn.execute(text("ANALYZE layers.city_components"))
    yield db
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE layers.city_components RESET (autovacuum_enabled)"))


def test_without_fresh_statistics_the_page_is_planned_badly(misled, tmp_path):
    """The control: the same rows inserted by SQL, which analyzes nothing, keep the misleading plan."""
    csv = pd.read_csv(components(tmp_path / "many.csv", 100_000, MANY, False, 2))
    with misled.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, geom) "
                          "SELECT c, '完好', ST_SetSRID(ST_Point(x, y), 4490) "
                          "FROM unnest(CAST(:c AS text[]), CAST(:x AS float8[]), CAST(:y AS float8[])) u (c, x, y)"),
                     {"c": list(csv["部件标识码"]), "x": list(csv["经度"]), "y": list(csv["纬度"])})
    assert not geometry_index_used(misled)


def test_after_an_etl_load_the_page_uses_the_geometry_index(misled, tmp_path):
    result = run_file(misled, "city_components", components(tmp_path / "many.csv", 100_000, MANY, False, 2))
    assert result.status == "succeeded" and result.counts["inserted"] == MANY
    with misled.connect() as conn:  # the load's ANALYZE counted the rows (autovacuum is off)
        rows = conn.execute(text("SELECT reltuples FROM pg_class "
                                 "WHERE oid = CAST('layers.city_components' AS regclass)")).scalar_one()
    assert rows == FEW + MANY
    assert geometry_index_used(misled)


def test_reverting_a_big_run_refreshes_the_statistics_too(misled, tmp_path):
    from layers.revert import revert_run

    result = run_file(misled, "city_components", components(tmp_path / "many.csv", 100_000, MANY, False, 2))
    with misled.begin() as conn:
        assert revert_run(conn, result.run_id).counts["deleted"] == MANY
    with misled.connect() as conn:
        rows = conn.execute(text("SELECT reltuples FROM pg_class "
                                 "WHERE oid = CAST('layers.city_components' AS regclass)")).scalar_one()
    assert rows == FEW
