"""Statistics of the cases reported in a period, per grid, street or department (the key's scope applies):

- counts by class and by state, and how many are overdue now;
- 按期处置率 (on_time_rate): of the handlers' results (反馈), the share given within the 处置 deadline;
- 结案率 (closed_rate): of the cases registered (立案, so neither 上报 nor 不予立案), the share 结案;
- 返工率 (rework_rate): of the supervisors' verifications (核查), the share failed and sent back to 处置;
- mean hours per stage: how long the cases stayed in each state they left.
"""

from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import text

from cases import access, loop
from cases.routes import json_answer
from twin.auth import Principal, authenticate
from twin.errors import ApiError

router = APIRouter(prefix="/cases", tags=["cases"])
GROUPS = {"grid": "c.grid_code", "street": "c.street_code", "department": "c.department"}

# {group}: a column of layers.cases (alias c) from GROUPS; {scope}: access.scope_filter's conditions. The sums come
# from cases.tally, which each step keeps, so a period's statistics read its cases and their tallies only.
STAGES = len(loop.OPEN)
CASES = """
WITH picked AS MATERIALIZED (
    SELECT coalesce({group}, '') AS area, c.class_code, c.state, c.stage_due, t.*
    FROM layers.cases c LEFT JOIN cases.tally t ON t.case_fid = c.fid
    WHERE c.reported_at >= :start AND c.reported_at < :end AND {scope}
), sums AS (
    SELECT area, count(*) AS cases,
           count(*) FILTER (WHERE state = ANY(:open) AND stage_due < :now) AS overdue,
           count(*) FILTER (WHERE state NOT IN (:reported, :rejected)) AS registered,
           count(*) FILTER (WHERE state = :closed) AS closed,
           sum(results) AS results, sum(results_on_time) AS results_on_time,
           sum(verifications) AS verifications, sum(failed) AS failed,
           ARRAY[{spent}] AS spent_s, ARRAY[{left}] AS times_left
    FROM picked GROUP BY area
), by_class AS (
    SELECT area, jsonb_object_agg(class_code, n) AS classes FROM (
        SELECT area, class_code, count(*) AS n FROM picked GROUP BY area, class_code) x GROUP BY area
), by_state AS (
    SELECT area, jsonb_object_agg(state, n) AS states FROM (
        SELECT area, state, count(*) AS n FROM picked GROUP BY area, state) x GROUP BY area
)
SELECT s.*, k.classes, t.states FROM sums s JOIN by_class k USING (area) JOIN by_state t USING (area)
ORDER BY s.cases DESC, s.area
""".replace("{spent}", ", ".join(f"sum(spent_s[{i}])" for i in range(1, STAGES + 1))) \
   .replace("{left}", ", ".join(f"sum(times_left[{i}])" for i in range(1, STAGES + 1)))


def _stage_hours(spent_s: list[float], times_left: list[int]) -> dict[str, float]:
    return {state: round(spent / left / 3600, 2) for state, spent, left in zip(loop.OPEN, spent_s, times_left) if left}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@router.get("/statistics", summary="Counts by class and state, 按期处置率, 结案率, 返工率 and mean hours per stage, "
                                   "per grid, street or department, of the cases reported in [start, end)")
async def statistics(request: Request, principal: Principal = Depends(authenticate),
                     by: Literal["grid", "street", "department"] = "grid",
                     start: datetime = Query(description="ISO 8601, inclusive"),
                     end: datetime = Query(description="ISO 8601, exclusive")):
    access.require_loop_role(principal)
    start, end = (t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (start, end))
    if end <= start:
        raise ApiError(400, "empty_period", "end must come after start.", where="query.end")
    scope, bound = access.scope_filter(principal)
    bound |= {"start": start, "end": end, "now": datetime.now(timezone.utc), "open": list(loop.OPEN),
              "reported": loop.REPORTED, "rejected": loop.REJECTED, "closed": loop.CLOSED}
    async with request.app.state.read_engine.connect() as conn:
        rows = (await conn.execute(text(CASES.format(group=GROUPS[by], scope=scope)), bound)).all()
    return json_answer({"by": by, "start": start, "end": end, "groups": [{
        by: r.area, "cases": r.cases, "overdue": r.overdue, "by_class": r.classes, "by_state": r.states,
        "on_time_rate": _rate(r.results_on_time, r.results), "closed_rate": _rate(r.closed, r.registered),
        "rework_rate": _rate(r.failed, r.verifications),
        "mean_hours_by_stage": _stage_hours(r.spent_s, r.times_left)} for r in rows]})
