"""The observation store: monthly partitions, bulk ingest, and the look-ups an ingest path needs.

`add_observations` is the one way rows get in (HTTP dataArray, the HJ 212 listener's sink, later MQTT):
rows of water-quality Datastreams become the `water_quality` layer's readings (sensing.water_quality), all
others one multi-row upsert into `sensing.observation`: a row repeating a (datastream, phenomenonTime) key
replaces the stored one (the last write wins, also within one batch). The months the rows fall in are made
first (rows of older or stranger times than any month made land in the DEFAULT partition, never refused).
"""

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool
from sqlalchemy.ext.asyncio import AsyncConnection

from layers.store import analyze, changed_in_bulk
from sensing import tables as t
from sensing import water_quality as wq

MONTHS_AHEAD = 3  # made at start-up, so live data never waits on a new partition
log = logging.getLogger("sensing.store")


class ObservationRow(NamedTuple):  # a named tuple: made at less than half a frozen dataclass's cost, per row
    datastream_id: int
    phenomenon_time: datetime
    result: float | None
    result_quality: str | None = None
    result_time: datetime | None = None
    phenomenon_time_end: datetime | None = None
    feature_of_interest_id: int | None = None


def ensure_partitions(conn: Connection, first: datetime, last: datetime) -> int:
    """Make the monthly partitions from `first`'s month to `last`'s; returns how many were new."""
    return conn.execute(text("SELECT sensing.ensure_partitions(:first, :last)"),
                        {"first": first, "last": last}).scalar()


def prepare_months(conn: Connection, now: datetime | None = None) -> int:
    """At start-up: this month and the next MONTHS_AHEAD."""
    now = now or datetime.now(timezone.utc)
    return ensure_partitions(conn, now, now + timedelta(days=31 * MONTHS_AHEAD))


OPTIONAL_TIMES = ("phenomenon_time_end", "result_time")
TIMES = ("phenomenon_time",) + OPTIONAL_TIMES
NUMBERS = ("datastream_id", "result", "feature_of_interest_id")
# Times go as microseconds since the epoch (formatting datetimes as text was most of making the parameters), the
# whole seconds and the rest added apart: each float8 an interval is multiplied by is exact, whatever the year.
EPOCH, MICROSECOND = datetime(1970, 1, 1, tzinfo=timezone.utc), timedelta(microseconds=1)
INSTANT = ("timestamptz 'epoch' + ({0} / 1000000) * interval '1 second' + ({0} % 1000000) * interval '1 microsecond' "
           "AS {0}")
# The ids come back in the rows' order (their positions through the insert): reading each stored row's key back
# and finding it in Python was a fifth of a 10,000-row batch's time. They come as one text, split here: 10,000
# result rows through the driver and SQLAlchemy cost more than the split.
UPSERT = text(
    "WITH input AS (SELECT datastream_id, " + ", ".join(INSTANT.format(c) for c in TIMES) + ", result, "
    "result_quality, feature_of_interest_id, position "
    "FROM unnest(CAST(string_to_array(:datastream_id, ',') AS bigint[]), "
    "CAST(string_to_array(:phenomenon_time, ',') AS bigint[]), "
    "CAST(string_to_array(:phenomenon_time_end, ',', '') AS bigint[]), "
    "CAST(string_to_array(:result_time, ',', '') AS bigint[]), "
    "CAST(string_to_array(:result, ',', '') AS float8[]), CAST(:result_quality AS text[]), "
    "CAST(string_to_array(:feature_of_interest_id, ',', '') AS bigint[])) WITH ORDINALITY "
    "AS i (datastream_id, phenomenon_time, phenomenon_time_end, result_time, result, result_quality, "
    "feature_of_interest_id, position)), "
    "stored AS (INSERT INTO sensing.observation AS o (datastream_id, phenomenon_time, phenomenon_time_end, "
    "result_time, result, result_quality, feature_of_interest_id) "
    "SELECT datastream_id, phenomenon_time, phenomenon_time_end, result_time, result, result_quality, "
    "feature_of_interest_id FROM input "
    "ON CONFLICT (datastream_id, phenomenon_time) DO UPDATE SET phenomenon_time_end = excluded.phenomenon_time_end, "
    "result_time = excluded.result_time, result = excluded.result, result_quality = excluded.result_quality, "
    "feature_of_interest_id = excluded.feature_of_interest_id "
    "RETURNING o.id, o.datastream_id, o.phenomenon_time) "
    "SELECT string_agg(CAST(stored.id AS text), ',' ORDER BY input.position) "
    "FROM input JOIN stored USING (datastream_id, phenomenon_time)")


def water_quality_streams(conn: Connection, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """datastream id -> (station code, parameter field) of those among `ids` that are water-quality ones."""
    d, th = t.datastream, t.thing
    rows = conn.execute(select(d.c.id, th.c.station_code, d.c.wq_field).join_from(d, th, d.c.thing_id == th.c.id)
                        .where(d.c.id.in_(list(set(ids))), d.c.wq_field.is_not(None)))
    return {r.id: (r.station_code, r.wq_field) for r in rows}


def insert_rows(conn: Connection, rows: Iterable[ObservationRow], actor: str = "sensing") -> list[int]:
    """Store `rows` in the caller's transaction; returns their observation ids in order (the last write of a
    repeated key gets the id of the stored row)."""
    rows = list(rows)
    if not rows:
        return []
    streams = water_quality_streams(conn, (r.datastream_id for r in rows))
    ids: dict[tuple, int] = {}  # (station, field, time) of a reading's value, (datastream, microseconds) of a row
    readings: dict[tuple[str, datetime], tuple[dict, str | None]] = {}
    for row in rows if streams else ():
        if row.datastream_id in streams:
            station, field = streams[row.datastream_id]
            values, quality = readings.get((station, row.phenomenon_time), ({}, None))
            values[field] = row.result
            readings[(station, row.phenomenon_time)] = (values, row.result_quality or quality)
    for (station, moment), (values, quality) in readings.items():
        fid = wq.write_reading(conn, actor, station, moment, values, quality)
        for field in values:
            ids[(station, field, moment)] = -(fid * wq.STRIDE + wq.position_of(field))
    plain = [r for r in rows if r.datastream_id not in streams] if streams else rows
    keys, returned = upsert(conn, plain) if plain else ([], [])
    if len(returned) == len(rows):  # every row stored, no key repeated: the ids are in the rows' order
        out = returned
    else:
        out = _ids_in_order(rows, streams, ids | dict(zip(keys, returned, strict=True)))
    if _stored_listeners:
        conn.info.setdefault(_PENDING, []).append((rows, out))
    return out


def upsert(conn: Connection, rows: list[ObservationRow]) -> tuple[list[tuple[int, int]], list[int]]:
    """One upsert of `rows` (a repeated (datastream, phenomenonTime) key: its last row, at the key's first place);
    returns the stored keys (datastream id, microseconds since the epoch) and their ids, in that order."""
    columns = dict(zip(ObservationRow._fields, zip(*rows)))
    starts = [(v - EPOCH) // MICROSECOND for v in columns["phenomenon_time"]]
    keys = list(zip(columns["datastream_id"], starts))
    if len(set(keys)) < len(keys):
        latest = dict(zip(keys, rows))
        keys, rows = list(latest), list(latest.values())
        columns = dict(zip(ObservationRow._fields, zip(*rows)))
        starts = [start for _, start in keys]
    first, last = EPOCH + min(starts) * MICROSECOND, EPOCH + max(starts) * MICROSECOND
    ensure_partitions(conn, first, last)
    # the numbers and times go as one comma-joined text per column (None as ''), which PostgreSQL splits and
    # casts in C: adapting Python lists to array parameters was a third of the call; free text stays a list
    arrays = {c: _joined(columns[c]) for c in NUMBERS} | {c: _joined(_micros(columns[c])) for c in OPTIONAL_TIMES} | {
        "phenomenon_time": ",".join(map(str, starts)), "result_quality": list(columns["result_quality"])}
    ids_text = conn.execute(UPSERT, arrays).scalar()
    analyze_bulk(conn, len(rows), first, last)
    return keys, list(map(int, ids_text.split(",")))


def _joined(values) -> str:
    if None in values:
        return ",".join(["" if v is None else str(v) for v in values])
    return ",".join(map(str, values))


def _micros(times) -> list[int | None]:
    return [None if v is None else (v - EPOCH) // MICROSECOND for v in times]


def _ids_in_order(rows: list[ObservationRow], streams: dict[int, tuple[str, str]], ids: dict) -> list[int]:
    out = []
    for row in rows:
        if row.datastream_id in streams:
            station, field = streams[row.datastream_id]
            out.append(ids[(station, field, row.phenomenon_time)])
        else:
            out.append(ids[(row.datastream_id, (row.phenomenon_time - EPOCH) // MICROSECOND)])
    return out


# "Observations stored": whoever must hear of new observations (the MQTT publisher, alert rules) registers
# `listener(rows, ids)` with on_stored; it is called in the process that stored them, for every insert_rows
# (so every path: HTTP, dataArray, HJ 212, MQTT), once the transaction has committed and its connection has
# gone back to the pool; never for a rolled-back one. It runs in the committing thread: it must not block.
_stored_listeners: list[Callable[[list[ObservationRow], list[int]], None]] = []
_PENDING, _COMMITTED = "sensing.stored.pending", "sensing.stored.committed"


def on_stored(listener: Callable[[list[ObservationRow], list[int]], None]) -> Callable[[], None]:
    """Register `listener`; returns the function that unregisters it."""
    _stored_listeners.append(listener)
    return lambda: _stored_listeners.remove(listener)


@event.listens_for(Engine, "commit")
def _committing(conn: Connection) -> None:
    if _PENDING in conn.info:
        conn.info.setdefault(_COMMITTED, []).extend(conn.info.pop(_PENDING))


@event.listens_for(Engine, "rollback")
def _rolled_back(conn: Connection) -> None:
    if not conn.invalidated:  # an invalidated connection has no info to read (the pool's invalidate event clears it)
        conn.info.pop(_PENDING, None)


@event.listens_for(Pool, "invalidate")
def _lost(dbapi_connection, record, exception) -> None:
    if record is None:
        return
    record.info.pop(_PENDING, None)
    record.info.pop(_COMMITTED, None)


@event.listens_for(Pool, "checkin")
def _returned(dbapi_connection, record) -> None:
    if record is None:
        return
    record.info.pop(_PENDING, None)
    for rows, ids in record.info.pop(_COMMITTED, ()):
        for listener in list(_stored_listeners):
            try:
                listener(rows, ids)
            except Exception:
                log.exception("an observations-stored listener failed")


def analyze_bulk(conn: Connection, written: int, first: datetime, last: datetime) -> None:
    """ANALYZE the month partitions (and the hourly aggregate) a bulk insert changed in bulk, by the rule of
    layers.store.changed_in_bulk with a share of 1: a batch larger than what the table held when last counted.
    A new partition has no rows counted, so the first bulk load into it is analyzed; the batches after it no
    longer are each (an ANALYZE after each of a young month's first ten batches of 10,000 was a tenth of the
    ingest), autovacuum's own 10% rule and the planner's scaling of row counts by the table's size cover them."""
    if written <= 50:
        return
    partitions = conn.execute(text(
        "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'sensing.observation'::regclass AND c.relname BETWEEN "
        "'observation_' || to_char(CAST(:first AS timestamptz) AT TIME ZONE 'UTC', 'YYYY_MM') "
        "AND 'observation_' || to_char(CAST(:last AS timestamptz) AT TIME ZONE 'UTC', 'YYYY_MM')"),
        {"first": first, "last": last}).scalars().all()
    for table, rows in [(name, written) for name in partitions] + [("sensing.observation_hourly", written // 12)]:
        if changed_in_bulk(conn, table, rows, share=1.0):
            analyze(conn, table)


# The HJ 212 listener's sink (and any other async ingest path) --------------------------------------------

async def device_streams(conn: AsyncConnection, mn: str) -> dict[str, int] | None:
    """The Datastreams of the Thing whose properties.hj212_mn is the device number `mn`, by HJ 212 factor code
    (Datastream properties.hj212_code), in one round trip; None when no Thing has that device."""
    th, d = t.thing, t.datastream
    rows = (await conn.execute(
        select(th.c.id, d.c.properties["hj212_code"].astext, d.c.id)
        .outerjoin(d, (d.c.thing_id == th.c.id) & d.c.properties.has_key("hj212_code"))
        .where(th.c.properties["hj212_mn"].astext == mn))).all()
    return {code: stream for _, code, stream in rows if code is not None} if rows else None


async def add_observations(conn: AsyncConnection, rows: Iterable[ObservationRow], actor: str = "sensing") -> list[int]:
    """Store `rows` in one transaction of `conn` (begun here unless the caller began one) and commit it;
    returns their ids once committed, so an acknowledgement after this call is safe."""
    rows = list(rows)
    if conn.in_transaction():
        ids = await conn.run_sync(insert_rows, rows, actor)
        await conn.commit()
        return ids
    async with conn.begin():
        return await conn.run_sync(insert_rows, rows, actor)
