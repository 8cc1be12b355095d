"""The lean change log (migration 0007) tells exactly what the full one (0003) recorded.

Writes of every kind are made under 0003, which stored each change's properties and geometries;
after upgrading, the content read back from the versions (`layers.changelog`) must be the same,
bit for bit; downgrading must put the same columns back."""

import pytest
from sqlalchemy import func, select, text

from layers.catalog import get_layer
from layers.changelog import change, change_content
from tests.etl_support import drop_database, empty_database, engine_for
from twin.db import downgrade, migrate

WRITES = [
    # one statement inserting several features, then single-row changes of every kind
    "INSERT INTO layers.city_components (code, status, owner_unit, installed_on, geom) VALUES "
    "('3202140101000001', '完好', '城管', '2020-05-01', ST_Point(120.40, 31.50, 4490)), "
    "('3202140101000002', '破损', NULL, NULL, ST_Point(120.41, 31.51, 4490)), "
    "('3202140101000003', '完好', '水务', '2019-01-31', ST_Point(120.42, 31.52, 4490))",
    "UPDATE layers.city_components SET status = '破损' WHERE code = '3202140101000001'",
    "UPDATE layers.city_components SET geom = ST_Point(120.4005, 31.5003, 4490) WHERE code = '3202140101000001'",
    "UPDATE layers.city_components SET owner_unit = owner_unit",  # no-op: no change recorded
    "UPDATE layers.city_components SET installed_on = NULL, geom = ST_Point(120.43, 31.53, 4490) "
    "WHERE code = '3202140101000003'",
    "DELETE FROM layers.city_components WHERE code = '3202140101000002'",
    # a restore: the deleted feature back under its fid, at the version after its deletion
    "INSERT INTO layers.city_components (fid, code, status, version, geom) OVERRIDING SYSTEM VALUE "
    "SELECT fid, code, status, 4, geom FROM history.city_components WHERE code = '3202140101000002'",
    "INSERT INTO layers.districts (code, name, geom) VALUES "
    "('320214', '新吴区', ST_Multi(ST_MakeEnvelope(120.3, 31.4, 120.6, 31.6, 4490)))",
    "UPDATE layers.districts SET geom = ST_Multi(ST_MakeEnvelope(120.3, 31.4, 120.61, 31.62, 4490))",
    "INSERT INTO layers.water_quality (station_code, observed_at, status, water_temp, ph, water_class) VALUES "
    "('WX001', '2024-05-01 08:00+08', '正常', 21.5, 7.0, 3), ('WX002', '2024-05-01 09:00+08', '维护', NULL, 6.25, NULL)",
    "UPDATE layers.water_quality SET ph = 7.125, status = '正常' WHERE station_code = 'WX002'",
    "DELETE FROM layers.water_quality WHERE station_code = 'WX001'",
]
# two changes of one feature in one transaction: the first one's "after" is a version valid for no time
SAME_TRANSACTION = ["UPDATE layers.city_components SET status = '丢失' WHERE code = '3202140101000003'",
                    "UPDATE layers.city_components SET status = '占用' WHERE code = '3202140101000003'"]
RECORDED = ("SELECT change_id, layer, before, after, ST_AsBinary(geom_after) AS geom_after, "
            "geom_before IS DISTINCT FROM geom_after AS geom_changed, "
            "ST_HausdorffDistance(ST_Transform(geom_before, 4549), ST_Transform(geom_after, 4549)) AS shift_m "
            "FROM twin.change ORDER BY change_id")


@pytest.fixture
def scratch(database_url):
    url = empty_database(database_url, "twin_change_log")
    engine = engine_for(url)
    yield url, engine
    engine.dispose()
    drop_database(database_url, "twin_change_log")


def _recorded(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [(r.change_id, r.before, r.after, None if r.geom_after is None else bytes(r.geom_after),
                 r.geom_changed, r.shift_m) for r in conn.execute(text(RECORDED))]


def _read_back(engine) -> list[tuple]:
    out = []
    with engine.connect() as conn:
        rows = conn.execute(select(change.c.change_id, change.c.layer).order_by(change.c.change_id)).all()
        for layer in dict.fromkeys(r.layer for r in rows):
            ids = [r.change_id for r in rows if r.layer == layer]
            out += [(r.change_id, r.before, r.after, None if r.geom_after is None else bytes(r.geom_after),
                     r.geom_changed, r.shift_m) for r in conn.execute(change_content(get_layer(layer), ids))]
    return sorted(out, key=lambda r: r[0])


def test_lean_log_reads_back_what_the_full_log_recorded(scratch):
    url, engine = scratch
    migrate("0006", url=url)
    for statement in WRITES:
        with engine.begin() as conn:
            conn.execute(text(statement))
    with engine.begin() as conn:
        for statement in SAME_TRANSACTION:
            conn.execute(text(statement))
    recorded = _recorded(engine)
    assert len(recorded) == 16 and [r[0] for r in recorded] == list(range(1, 17))

    migrate("0007", url=url)
    assert _read_back(engine) == recorded
    with engine.connect() as conn:
        boxes = conn.execute(text("SELECT count(*) FILTER (WHERE bbox_after IS NOT NULL), "
                                  "count(*) FILTER (WHERE bbox_before IS NOT NULL) FROM twin.change")).one()
        moved = conn.execute(select(func.ST_AsText(change.c.bbox_before), func.ST_AsText(change.c.bbox_after))
                             .where(change.c.layer == "districts", change.c.operation == "update")).one()
    assert tuple(boxes) == (11, 7)  # of 12 spatial changes, 11 have an after, 7 a before
    assert moved == ("POLYGON((120.3 31.4,120.3 31.6,120.6 31.6,120.6 31.4,120.3 31.4))",
                     "POLYGON((120.3 31.4,120.3 31.62,120.61 31.62,120.61 31.4,120.3 31.4))")

    # new writes under 0007 read back as 0003 would have recorded them (checked after downgrading)
    with engine.begin() as conn:
        conn.execute(text("UPDATE layers.city_components SET status = '完好', geom = ST_Point(120.44, 31.54, 4490) "
                          "WHERE code = '3202140101000003'"))
        conn.execute(text("DELETE FROM layers.districts"))
    lean = _read_back(engine)
    assert len(lean) == 18
    downgrade("0006", url=url)
    assert _recorded(engine) == lean
