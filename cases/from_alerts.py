"""Alerts open cases: each alert whose rule asks for one (`open_case`, events.rules) opens one case of the rule's
`case_class`, source 告警, at the alert's point, routed by the responsibility table like any report.

The cases room follows the alerts through events' interface (events.case_requests), from a cursor kept in
`cases.alert_follower`. One process at a time reads (it holds that row with SKIP LOCKED), and the cases it opens
commit with the moved cursor in one transaction, so after a restart, or with several servers, each alert opens
exactly one case; `cases.alert_case` (one row per alert) links the case back to its alert, or says why no case
could be opened (an alert without a point, a class the cases room does not know, no route).
"""

import asyncio
import logging

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cases import store
from events.case_requests import CaseRequest, opened_after
from layers.store import set_write_context
from layers.writing import LOCK_WAIT
from twin.errors import ApiError
from twin.tasks import failed_round

log = logging.getLogger("twin.cases")
SOURCE = "告警"
PAGE = 100
IDLE_S = 5  # looked at again this often without a wake-up from the event hub (one that came just before waiting)


def description(alert: CaseRequest) -> str:
    value = "" if alert.worst_value is None else f"，最差值 {alert.worst_value:g}"
    limit = "" if alert.limit_value is None else f"（限值 {alert.limit_value:g}）"
    what = f" {alert.parameter}" if alert.parameter else ""
    since = f"，始于 {alert.first_at.isoformat()}" if alert.first_at else ""
    return f"告警 {alert.alert_code}：规则 {alert.rule}，站点 {alert.station or '未知'}{what}{value}{limit}{since}"


async def _open(conn: AsyncConnection, data_dir, alert: CaseRequest) -> None:
    actor = f"告警 {alert.alert_code}"
    await conn.run_sync(set_write_context, actor)
    problem = None
    if alert.lon is None:
        problem = "the alert has no point (its Thing has no location)"
    else:
        report = store.Report(lon=alert.lon, lat=alert.lat, class_code=alert.case_class,
                              description=description(alert), source=SOURCE, component_code=None, contact={},
                              client=f"alert:{alert.alert_code}", photos=[])
        try:
            async with conn.begin_nested():
                row = await store.insert(conn, data_dir, actor, report, None)
                await conn.execute(text("INSERT INTO cases.alert_case (alert_fid, alert_code, case_fid) "
                                        "VALUES (:a, :code, :c)"),
                                   {"a": alert.alert_fid, "code": alert.alert_code, "c": row.fid})
            log.info("alert %s (rule %s) opened case %s", alert.alert_code, alert.rule, row.case_no)
            return
        except ApiError as e:
            problem = e.detail
    log.warning("alert %s (rule %s) opened no case: %s", alert.alert_code, alert.rule, problem)
    await conn.execute(text("INSERT INTO cases.alert_case (alert_fid, alert_code, problem) VALUES (:a, :code, :p)"),
                       {"a": alert.alert_fid, "code": alert.alert_code, "p": problem})


async def open_cases(app: FastAPI) -> int | None:
    """Open the cases of the alerts after the cursor, if this process holds it (else None); the new cursor."""
    async with app.state.engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        cursor = (await conn.execute(text("SELECT cursor FROM cases.alert_follower FOR UPDATE SKIP LOCKED"))).scalar()
        if cursor is None:
            return None
        alerts, position = await opened_after(conn, cursor, PAGE)
        for alert in alerts:
            await _open(conn, app.state.settings.data_dir, alert)
        if position != cursor:
            await conn.execute(text("UPDATE cases.alert_follower SET cursor = :p"), {"p": position})
    return position


async def follow(app: FastAPI) -> None:
    """For the server's life: open cases as alerts asking for them arrive (woken by the event hub)."""
    hub = app.state.event_hub
    while True:
        try:
            position = await open_cases(app)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the database away: the cursor stays, try again
            failed_round(log, "opening cases from alerts failed", e)
            position = None
            await asyncio.sleep(2)
        if position is None or position >= hub.position:
            await hub.wait(IDLE_S)
