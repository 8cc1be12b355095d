"""The unfiltered /sta/v1.1/Observations pages (each part of the union cut before the sort) are the rows, in the
order, that sorting the whole union gives."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from sensing.sta.entities import ENTITIES
from tests.sta_support import get


@pytest.fixture(scope="module")
def stored(engine, loaded, server):
    """Some stored observations beside the water-quality readings, for a Thing of this module's own."""
    with engine.begin() as conn:
        stream = conn.execute(text(
            "WITH th AS (INSERT INTO sensing.thing (name, properties, department) "
            "VALUES ('page test', '{\"hj212_mn\": \"PAGE-TEST-1\"}', '生态环境局') RETURNING id), "
            "se AS (INSERT INTO sensing.sensor (name, department) VALUES ('page test', '生态环境局') RETURNING id), "
            "op AS (INSERT INTO sensing.observed_property (name, definition, department) "
            "       VALUES ('page test', 'urn:test:page', '生态环境局') RETURNING id) "
            "INSERT INTO sensing.datastream (name, unit_of_measurement, observation_type, thing_id, sensor_id, "
            "observed_property_id, department) SELECT 'page test', '{}', 'OM_Measurement', th.id, se.id, op.id, "
            "'生态环境局' FROM th, se, op RETURNING id")).scalar()
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        conn.execute(text("SELECT sensing.ensure_partitions(:a, :b)"), {"a": start, "b": start + timedelta(days=1)})
        conn.execute(text("INSERT INTO sensing.observation (datastream_id, phenomenon_time, result) "
                          "SELECT :s, :t + n * interval '1 minute', n FROM generate_series(1, 250) n"),
                     {"s": stream, "t": start})
    return stream


def expected(engine, skip: int, top: int) -> list[int]:
    """The page as the whole union sorted gives it."""
    source = ENTITIES["Observation"].source()
    with engine.connect() as conn:
        return conn.execute(select(source.c.id).order_by(source.c.id).offset(skip).limit(top)).scalars().all()


@pytest.mark.parametrize("skip,top", [(0, 100), (0, 1), (37, 250)])
def test_first_pages_equal_the_sorted_union(http, engine, stored, skip, top):
    body = get(http, "Observations", **{"$top": str(top), "$skip": str(skip)})
    assert [o["@iot.id"] for o in body["value"]] == expected(engine, skip, top)
    assert "@iot.nextLink" in body


def test_the_page_across_the_parts_and_past_the_end(http, engine, stored):
    with engine.connect() as conn:
        readings = conn.execute(text("SELECT count(*) FROM (SELECT 1 FROM sensing.observation WHERE id < 0) r")).scalar()
    everything = expected(engine, 0, 10_000_000)  # the whole union, sorted once
    total = len(everything)
    assert readings == 0 and total > 250  # readings are in the union, never stored
    for skip in (total - 260, total - 5):  # across the readings' and stored parts; past the end
        body = get(http, "Observations", **{"$top": "200", "$skip": str(skip)})
        assert [o["@iot.id"] for o in body["value"]] == everything[skip:skip + 200]
        assert ("@iot.nextLink" in body) == (skip + 200 < total)
    values = get(http, "Observations", **{"$top": "3", "$skip": str(total - 3), "$select": "id,result"})["value"]
    assert [o["result"] for o in values] == [248.0, 249.0, 250.0]
