"""The observation store under the API: monthly partitions made ahead, the DEFAULT partition for strays, the
aggregates and latest observation kept through inserts, updates and deletes, and the HJ 212 sink's calls."""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from sensing import store
from twin.db import async_engine
from twin.settings import get_settings

UTC = timezone.utc


@pytest.fixture(scope="module")
def stream(engine, server):
    """A Thing with an MN and one Datastream (hj212_code w01018), made in SQL (the server has started, so the
    coming months exist)."""
    with engine.begin() as conn:
        thing = conn.execute(text("INSERT INTO sensing.thing (name, properties, department) VALUES "
                                  "('store test', '{\"hj212_mn\": \"STORE-MN-1\"}', '生态环境局') RETURNING id")).scalar()
        sensor = conn.execute(text("INSERT INTO sensing.sensor (name, department) VALUES ('store sensor', 'x') "
                                   "RETURNING id")).scalar()
        prop = conn.execute(text("SELECT id FROM sensing.observed_property LIMIT 1")).scalar()
        return conn.execute(text(
            "INSERT INTO sensing.datastream (name, unit_of_measurement, observation_type, thing_id, sensor_id, "
            "observed_property_id, department, properties) VALUES ('COD', '{\"symbol\": \"mg/L\"}', 'OM_Measurement', "
            ":t, :s, :p, '生态环境局', '{\"hj212_code\": \"w01018\"}') RETURNING id"),
            {"t": thing, "s": sensor, "p": prop}).scalar()


def _partitions(conn) -> set[str]:
    return set(conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                 "WHERE i.inhparent = 'sensing.observation'::regclass")).scalars())


def test_the_server_made_the_coming_months(engine, server):
    now = datetime.now(UTC)
    with engine.connect() as conn:
        made = _partitions(conn)
    for months in range(store.MONTHS_AHEAD + 1):
        moment = now + timedelta(days=31 * months)
        assert f"observation_{moment:%Y_%m}" in made
    assert "observation_default" in made


def test_a_stray_goes_to_the_default_partition_and_moves_to_its_month_later(engine, stream):
    old = datetime(2001, 3, 15, 8, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sensing.observation (datastream_id, phenomenon_time, result) "
                          "VALUES (:d, :t, 1.5)"), {"d": stream, "t": old})
        assert conn.execute(text("SELECT count(*) FROM sensing.observation_default WHERE datastream_id = :d"),
                            {"d": stream}).scalar() == 1
        assert store.ensure_partitions(conn, old, old) == 1
        assert conn.execute(text("SELECT count(*) FROM sensing.observation_2001_03 WHERE datastream_id = :d"),
                            {"d": stream}).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM sensing.observation_default WHERE datastream_id = :d"),
                            {"d": stream}).scalar() == 0
        assert store.ensure_partitions(conn, old, old) == 0


def _aggregates_match(conn, stream: int) -> None:
    for unit, table in (("hour", "observation_hourly"), ("day", "observation_daily")):
        raw = conn.execute(text(
            "SELECT date_trunc(:u, phenomenon_time, 'Asia/Shanghai'), count(result), min(result), max(result), "
            "sum(result) FROM sensing.observation WHERE datastream_id = :d GROUP BY 1 ORDER BY 1"),
            {"u": unit, "d": stream}).all()
        kept = conn.execute(text(f"SELECT period_start, count, min, max, sum FROM sensing.{table} "
                                 "WHERE datastream_id = :d AND count > 0 ORDER BY 1"), {"d": stream}).all()
        assert [tuple(r) for r in kept] == [(r[0], r[1], r[2], r[3], pytest.approx(r[4])) for r in raw]
    latest = conn.execute(text("SELECT phenomenon_time, result FROM sensing.latest_observation WHERE datastream_id = :d"),
                          {"d": stream}).one()
    assert tuple(latest) == tuple(conn.execute(text(
        "SELECT phenomenon_time, result FROM sensing.observation WHERE datastream_id = :d "
        "ORDER BY phenomenon_time DESC LIMIT 1"), {"d": stream}).one())


def test_the_sink_stores_and_the_aggregates_follow_updates_and_deletes(engine, stream):
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    rows = [store.ObservationRow(stream, start + timedelta(minutes=10 * i), float(i % 7), "N") for i in range(300)]

    async def sink() -> list[int]:
        engine_ = async_engine(get_settings())
        try:
            async with engine_.connect() as conn:
                assert await store.device_streams(conn, "STORE-MN-1") == {"w01018": stream}
                assert await store.device_streams(conn, "unknown") is None
                return await store.add_observations(conn, rows)
        finally:
            await engine_.dispose()

    ids = asyncio.run(sink())
    assert len(ids) == 300 and all(i > 0 for i in ids)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM sensing.observation WHERE id = ANY(:ids)"),
                            {"ids": ids}).scalar() == 300  # committed
        _aggregates_match(conn, stream)
        conn.execute(text("UPDATE sensing.observation SET result = result * 10 WHERE datastream_id = :d "
                          "AND phenomenon_time < :t"), {"d": stream, "t": start + timedelta(hours=5)})
        _aggregates_match(conn, stream)
        conn.execute(text("DELETE FROM sensing.observation WHERE datastream_id = :d AND phenomenon_time > :t"),
                     {"d": stream, "t": start + timedelta(hours=40)})
        _aggregates_match(conn, stream)


def test_a_bulk_insert_into_a_new_partition_is_analyzed(engine, stream):
    moment = datetime(2002, 6, 1, tzinfo=UTC)
    rows = [store.ObservationRow(stream, moment + timedelta(minutes=i), 1.0) for i in range(200)]
    with engine.begin() as conn:
        store.insert_rows(conn, rows)
        assert conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'sensing.observation_2002_06'::regclass")
                            ).scalar() == 200


@pytest.mark.parametrize("moment", [datetime(1, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
                                    datetime(1600, 7, 1, 7, 59, 59, 999999, tzinfo=timezone(timedelta(hours=8))),
                                    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                                    datetime(2026, 3, 29, 1, 30, 0, 123457, tzinfo=timezone(timedelta(hours=-5)))])
def test_every_time_is_stored_to_the_microsecond_and_each_row_gets_its_id(engine, stream, moment):
    rows = [store.ObservationRow(stream, moment, 1.0, "N", moment - timedelta(microseconds=3),
                                 moment + timedelta(days=1)),
            store.ObservationRow(stream, moment + timedelta(seconds=1), 2.0),
            store.ObservationRow(stream, moment, 3.0, "A")]  # the same key again: the last write wins, the same id
    with engine.begin() as conn:
        ids = store.insert_rows(conn, rows)
        stored = {r.id: r for r in conn.execute(text(
            "SELECT id, phenomenon_time, phenomenon_time_end, result_time, result, result_quality "
            "FROM sensing.observation WHERE id = ANY(:ids)"), {"ids": ids})}
        conn.rollback()
    assert ids[0] == ids[2] != ids[1]
    assert (stored[ids[0]].phenomenon_time, stored[ids[0]].result, stored[ids[0]].result_quality) == (moment, 3.0, "A")
    assert stored[ids[0]].result_time is None and stored[ids[0]].phenomenon_time_end is None
    assert stored[ids[1]].phenomenon_time == moment + timedelta(seconds=1)
    with engine.begin() as conn:
        ids = store.insert_rows(conn, rows[:1])
        row = conn.execute(text("SELECT phenomenon_time, phenomenon_time_end, result_time FROM sensing.observation "
                                "WHERE id = :id"), {"id": ids[0]}).one()
        conn.rollback()
    assert tuple(row) == (moment, moment + timedelta(days=1), moment - timedelta(microseconds=3))


def test_a_batch_of_readings_and_rows_gets_ids_in_order_and_one_key_per_instant(engine, stream):
    moment = datetime(2003, 2, 1, 8, tzinfo=UTC)
    with engine.connect() as conn:
        reading = conn.execute(text("SELECT id FROM sensing.datastream WHERE wq_field = 'ph' LIMIT 1")).scalar()
    rows = [store.ObservationRow(stream, moment, 1.0),
            store.ObservationRow(reading, moment, 7.5, "N"),
            store.ObservationRow(stream, moment + timedelta(minutes=1), 2.0),
            # the first row's instant written in another offset: the same key, the last write wins
            store.ObservationRow(stream, moment.astimezone(timezone(timedelta(hours=8))), 3.0)]
    with engine.begin() as conn:
        ids = store.insert_rows(conn, rows)
        stored = dict(conn.execute(text("SELECT id, result FROM sensing.observation WHERE id = ANY(:ids)"),
                                   {"ids": ids}).all())
        conn.rollback()
    assert ids[0] == ids[3] > 0 and ids[2] > 0 and ids[1] < 0  # a reading's id is its layer row's, negative
    assert stored == {ids[0]: 3.0, ids[2]: 2.0}
