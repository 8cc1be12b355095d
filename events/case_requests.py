"""For the rooms above (the cases room): the alerts whose rule asks, by `open_case`, for a case.

Read forward from the change log like every other follower of events (feed): a reader keeps the change id it
has read up to, and each call returns the alerts opened after it with the position to keep next. Change ids
are allocated in commit order, so nothing is missed or repeated between calls.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from events.feed import ALERTS, last_id


@dataclass(frozen=True)
class CaseRequest:
    alert_fid: int
    alert_code: str
    rule: str
    case_class: str
    station: str | None  # the station code, or the Thing's name (a discharger)
    parameter: str | None
    worst_value: float | None
    limit_value: float | None
    first_at: datetime | None
    lon: float | None
    lat: float | None


OPENED = text(
    "SELECT c.change_id, a.fid, a.code, a.rule, r.case_class, coalesce(a.station_code, a.thing_name) AS station, "
    "a.parameter, a.worst_value, a.limit_value, a.first_at, ST_X(a.geom) AS lon, ST_Y(a.geom) AS lat "
    "FROM twin.change c JOIN layers.alerts a ON a.fid = c.fid LEFT JOIN events.rule r ON r.name = a.rule "
    "WHERE c.layer = :layer AND c.operation = 'insert' AND c.change_id > :after AND c.change_id <= :upto "
    "ORDER BY c.change_id LIMIT :limit")


async def opened_after(conn: AsyncConnection, after: int, limit: int) -> tuple[list[CaseRequest], int]:
    """The alerts opened after change id `after` whose rule asks for a case, and the change id read up to."""
    upto = await last_id(conn)  # the log's end, readings' events included: the hub's position is the same
    rows = (await conn.execute(OPENED, {"layer": ALERTS, "after": after, "upto": upto, "limit": limit})).all()
    position = rows[-1].change_id if len(rows) == limit else max(upto, after)
    return [CaseRequest(r.fid, r.code, r.rule, r.case_class, r.station, r.parameter, r.worst_value, r.limit_value,
                        r.first_at, r.lon, r.lat) for r in rows if r.case_class is not None], position
