"""A stored Datastream's series read from the hourly and daily aggregates equals the same figures computed from
its raw observations; a water-quality Datastream is pointed at the station's series."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

START = datetime(2025, 12, 30, 16, tzinfo=timezone.utc)  # 2025-12-31 00:00 in China Standard Time


@pytest.fixture(scope="module")
def stream(engine, loaded, server):
    """A Datastream with five days of 5-minute observations (some null results, one updated, one deleted)."""
    with engine.begin() as conn:
        stream = conn.execute(text(
            "WITH th AS (INSERT INTO sensing.thing (name, properties, department) "
            "VALUES ('series test', '{\"hj212_mn\": \"SERIES-TEST-1\"}', '生态环境局') RETURNING id), "
            "se AS (INSERT INTO sensing.sensor (name, department) VALUES ('series test', '生态环境局') RETURNING id), "
            "op AS (INSERT INTO sensing.observed_property (name, definition, department) "
            "       VALUES ('series test', 'urn:test:series', '生态环境局') RETURNING id) "
            "INSERT INTO sensing.datastream (name, unit_of_measurement, observation_type, thing_id, sensor_id, "
            "observed_property_id, department) SELECT 'series test', '{\"symbol\": \"mg/L\"}', 'OM_Measurement', "
            "th.id, se.id, op.id, '生态环境局' FROM th, se, op RETURNING id")).scalar()
        conn.execute(text("SELECT sensing.ensure_partitions(:a, :b)"), {"a": START, "b": START + timedelta(days=6)})
        conn.execute(text("INSERT INTO sensing.observation (datastream_id, phenomenon_time, result) "
                          "SELECT :s, :t + n * interval '5 minutes', "
                          "CASE WHEN n % 97 = 0 THEN NULL ELSE 20 + (n * 37 % 101) / 10.0 END "
                          "FROM generate_series(0, 5 * 288 - 1) n"), {"s": stream, "t": START})
        conn.execute(text("UPDATE sensing.observation SET result = 99 WHERE datastream_id = :s "
                          "AND phenomenon_time = :t"), {"s": stream, "t": START + timedelta(days=1, hours=3)})
        conn.execute(text("DELETE FROM sensing.observation WHERE datastream_id = :s AND phenomenon_time = :t"),
                     {"s": stream, "t": START + timedelta(days=2, minutes=5)})
    return stream


def raw(engine, stream: int, unit: str, first: datetime, last: datetime) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            f"SELECT date_trunc('{unit}', phenomenon_time, 'Asia/Shanghai') s, count(result), avg(result), "
            "min(result), max(result) FROM sensing.observation WHERE datastream_id = :s AND phenomenon_time >= :a "
            "AND phenomenon_time < :b GROUP BY 1 ORDER BY 1"), {"s": stream, "a": first, "b": last})]


@pytest.mark.parametrize("aggregate,unit", [("daily", "day"), ("hourly", "hour")])
def test_aggregates_equal_the_raw_computation(http, engine, stream, aggregate, unit):
    first, last = START + timedelta(days=1), START + timedelta(days=4)
    response = http.get(f"/datastreams/{stream}/series", params={
        "aggregate": aggregate, "datetime": f"{first.isoformat()}/{(last - timedelta(seconds=1)).isoformat()}"})
    assert response.status_code == 200, response.text
    body = response.json()
    got = [(datetime.fromisoformat(p["start"]), p["count"], p["mean"], p["min"], p["max"]) for p in body["periods"]]
    expected = raw(engine, stream, unit, first, last)
    assert len(got) == len(expected) == (3 if aggregate == "daily" else 72)
    for (s1, c1, mean1, lo1, hi1), (s2, c2, mean2, lo2, hi2) in zip(got, expected):
        assert (s1, c1, lo1, hi1) == (s2, c2, lo2, hi2)
        assert mean1 == pytest.approx(float(mean2), rel=1e-12)
    assert body["timeZone"] == "Asia/Shanghai" and body["periods"][0]["start"].endswith("+08:00")


def test_a_water_quality_datastream_and_unknown_ids_are_refused(http, engine, stream):
    with engine.connect() as conn:
        wq = conn.execute(text("SELECT id FROM sensing.datastream WHERE wq_field IS NOT NULL LIMIT 1")).scalar()
    refused = http.get(f"/datastreams/{wq}/series")
    assert refused.status_code == 400 and "/collections/water_quality/series?station=" in refused.json()["description"]
    assert http.get("/datastreams/987654321/series").status_code == 404
    assert http.get(f"/datastreams/{stream}/series", params={"aggregate": "weekly"}).status_code in (400, 422)
