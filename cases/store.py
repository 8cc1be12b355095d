"""The loop's writes: a report makes a case (a feature of the `cases` layer), a step moves it on. Each is one
transaction that first claims the change log (writers are serialised there, so of two handlers racing for one
case exactly one finds it in the state they expect), then writes the layer row (its change tracking keeps the
version, actor and time) and the stage log (`cases.step`) for the timeline and the statistics."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import shapely
from fastapi import Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cases import access, loop, routing
from cases.classes import COMPONENT, CaseClass, case_classes, component_class_code
from cases.photos import Photo, store as store_photo
from layers.catalog import with_area
from layers.codes import component_code as component_code_problem
from layers.scope import place
from layers.writing import write_transaction
from twin.auth import Principal
from twin.errors import ApiError

DUPLICATE_M = 50
DUPLICATE_HOURS = 24
CASE_COLUMNS = ("fid, case_no, class_code, class_name, kind, component_code, description, source, state, grid_code, "
                "street_code, department, reported_at, stage_due, closed_at, reason, duplicate_of, rework, version, "
                "updated_at, ST_X(geom) AS lon, ST_Y(geom) AS lat")


@dataclass
class Report:
    lon: float | None
    lat: float | None
    class_code: str | None
    description: str | None
    source: str
    component_code: str | None
    contact: dict
    client: str
    photos: list[Photo]


class Replayed(Exception):
    """The Idempotency-Key was used before (by a report made meanwhile)."""


def case_json(row, now: datetime | None = None) -> dict:
    body = {k: row._mapping[k] for k in ("case_no", "class_code", "class_name", "kind", "component_code",
                                          "description", "source", "state", "grid_code", "street_code", "department",
                                          "reported_at", "stage_due", "closed_at", "reason", "duplicate_of", "rework",
                                          "version", "lon", "lat")}
    body["overdue"] = bool(now and row.stage_due and row.state in loop.OPEN and row.stage_due < now)
    body["allowed_steps"] = loop.allowed_from(row.state)
    return body


async def claim(conn: AsyncConnection) -> datetime:
    """Take the change log's writer lock; the moment every change of this transaction carries."""
    return (await conn.execute(text("SELECT twin.claim_change_log()"))).scalar()


async def case_by_no(conn: AsyncConnection, case_no: str, lock: bool = False):
    row = (await conn.execute(text(f"SELECT {CASE_COLUMNS} FROM layers.cases WHERE case_no = :no"
                                   + (" FOR UPDATE" if lock else "")), {"no": case_no})).first()
    if row is None:
        raise ApiError(404, "unknown_case", f"No case {case_no[:40]!r}.", where="path.case_no")
    return row


def _unknown_class(code: str) -> ApiError:
    return ApiError(422, "unknown_class", f"Unknown case class {code[:40]!r}; the classes are: "
                    + ", ".join(f"{c.code} {c.name}" for c in case_classes().values()) + " (GET /open311/v2/services.json).",
                    where="body.class_code")


async def _case_class(conn: AsyncConnection, report: Report) -> tuple[CaseClass, tuple[float, float]]:
    """The case's class and position: a component problem takes both from the component when not given."""
    position = (report.lon, report.lat)
    if report.component_code is None:
        if report.class_code is None:
            raise ApiError(422, "missing_class", "A report needs class_code (or component_code for a component "
                           "problem).", where="body.class_code")
        if report.class_code not in case_classes():
            raise _unknown_class(report.class_code)
        if case_classes()[report.class_code].kind == COMPONENT:
            raise ApiError(422, "missing_component", f"Class {report.class_code} is a component problem: give the "
                           "component's code as component_code.", where="body.component_code")
        if None in position:
            raise ApiError(422, "missing_location", "A report needs lon and lat (WGS84).", where="body.lon")
        return case_classes()[report.class_code], position
    if problem := component_code_problem(report.component_code):
        raise ApiError(422, "invalid_component_code", problem, where="body.component_code")
    component = (await conn.execute(text("SELECT ST_X(geom), ST_Y(geom) FROM layers.city_components WHERE code = :c"),
                                    {"c": report.component_code})).first()
    if component is None:
        raise ApiError(422, "unknown_component", f"No city component {report.component_code}.",
                       where="body.component_code")
    derived = component_class_code(report.component_code)
    if report.class_code not in (None, derived):
        raise ApiError(422, "class_mismatch", f"Component {report.component_code} is of class {derived}, not "
                       f"{report.class_code}.", where="body.class_code")
    return case_classes()[derived], (position if None not in position else tuple(component))


async def _in_district(conn: AsyncConnection, lon: float, lat: float) -> None:
    """The server's district is the one its streets belong to (of the `districts` layer's features)."""
    streets, districts = with_area("street").table, with_area("district").table  # validated identifiers
    found = (await conn.execute(text(
        f"SELECT bool_or(d.code IN (SELECT district_code FROM {streets})), "
        f"string_agg(d.name, ', ') FILTER (WHERE d.code NOT IN (SELECT district_code FROM {streets})), "
        f"(SELECT string_agg(DISTINCT name, ', ') FROM {districts} WHERE code IN "
        f" (SELECT district_code FROM {streets})) "
        f"FROM {districts} d WHERE ST_Intersects(d.geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))"),
        {"lon": lon, "lat": lat})).one()
    inside, elsewhere, ours = found
    if not inside:
        where = f"in {elsewhere}" if elsewhere else "outside every district of the `districts` layer"
        raise ApiError(422, "outside_district", f"({lon}, {lat}) lies {where}: this server takes cases in "
                       f"{ours or 'its district'} only.", where="body.lon")


async def _duplicate_of(conn: AsyncConnection, class_code: str, lon: float, lat: float, moment: datetime) -> str | None:
    return (await conn.execute(text(
        "SELECT case_no FROM layers.cases, ST_SetSRID(ST_MakePoint(:lon, :lat), 4490) AS p "
        "WHERE class_code = :class AND state <> ALL(:final) AND reported_at > :since "
        "AND ST_DWithin(geom, p, 0.001) AND ST_DistanceSphere(geom, p) <= :m "
        "ORDER BY ST_DistanceSphere(geom, p), reported_at LIMIT 1"),
        {"lon": lon, "lat": lat, "class": class_code, "final": list(loop.FINAL), "m": DUPLICATE_M,
         "since": moment - timedelta(hours=DUPLICATE_HOURS)})).scalar()


async def replay(conn: AsyncConnection, key: str, request_sha256: str):
    """The case an Idempotency-Key already made, or None; a key reused for another report is a 422."""
    known = (await conn.execute(text("SELECT request_sha256, case_fid FROM cases.idempotency WHERE key = :k"),
                                {"k": key})).first()
    if known is None:
        return None
    if known.request_sha256 != request_sha256:
        raise ApiError(422, "idempotency_key_reused", "This Idempotency-Key was sent before with another report; "
                       "use a new key for a new report.", where="header.Idempotency-Key")
    return (await conn.execute(text(f"SELECT {CASE_COLUMNS} FROM layers.cases WHERE fid = :f"),
                               {"f": known.case_fid})).first()


async def report(request: Request, actor: str, item: Report, idempotency: tuple[str, str] | None):
    """Make a case of a report; its row."""
    async with write_transaction(request, actor) as conn:
        return await insert(conn, request.app.state.settings.data_dir, actor, item, idempotency)


async def insert(conn: AsyncConnection, data_dir, actor: str, item: Report, idempotency: tuple[str, str] | None):
    """Make a case of a report in the write transaction `conn`; its row."""
    case_class, (lon, lat) = await _case_class(conn, item)
    await _in_district(conn, lon, lat)
    moment = await claim(conn)
    grid, street = await place(conn, shapely.Point(lon, lat))
    route = await routing.route(conn, case_class.code, grid, street)
    duplicate = await _duplicate_of(conn, case_class.code, lon, lat, moment)
    row = (await conn.execute(text(
        "INSERT INTO layers.cases (case_no, class_code, class_name, kind, component_code, description, source, "
        "state, grid_code, street_code, department, reported_at, stage_due, duplicate_of, rework, geom) "
        "VALUES ('XW' || to_char(CAST(:moment AS timestamptz) AT TIME ZONE 'Asia/Shanghai', 'YYYYMMDD') "
        "|| lpad(nextval('cases.case_no_seq')::text, 7, '0'), :class, :name, :kind, :component, :description, "
        ":source, :state, :grid, :street, :department, :moment, "
        "CAST(:moment AS timestamptz) + :hours * interval '1 hour', :duplicate, 0, "
        "ST_SetSRID(ST_MakePoint(:lon, :lat), 4490)) RETURNING " + CASE_COLUMNS),
        {"moment": moment, "class": case_class.code, "name": case_class.name, "kind": case_class.kind,
         "component": item.component_code, "description": item.description, "source": item.source,
         "state": loop.REPORTED, "grid": grid, "street": street, "department": route.department,
         "hours": route.hours[loop.REPORT_DEADLINE], "duplicate": duplicate, "lon": lon, "lat": lat})).one()
    await conn.execute(text(
        "INSERT INTO cases.step (case_fid, action, to_state, actor, role, at, note) "
        "VALUES (:fid, 'report', :state, :actor, :role, :moment, :note)"),
        {"fid": row.fid, "state": loop.REPORTED, "actor": actor, "role": item.source, "moment": moment,
         "note": f"疑似重复: {duplicate}" if duplicate else None})
    await conn.execute(text("INSERT INTO cases.tally (case_fid) VALUES (:fid)"), {"fid": row.fid})
    await conn.execute(text("INSERT INTO cases.reporter (case_fid, contact, client, reported_at) "
                            "VALUES (:fid, CAST(:contact AS jsonb), :client, :moment)"),
                       {"fid": row.fid, "contact": json.dumps(item.contact, ensure_ascii=False),
                        "client": item.client, "moment": moment})
    for photo in item.photos:
        await add_photo(data_dir, conn, row.fid, loop.REPORTED, photo, actor)
    if idempotency is not None:
        taken = (await conn.execute(text(
            "INSERT INTO cases.idempotency (key, request_sha256, case_fid) VALUES (:k, :h, :f) "
            "ON CONFLICT (key) DO NOTHING RETURNING key"),
            {"k": idempotency[0], "h": idempotency[1], "f": row.fid})).first()
        if taken is None:
            raise Replayed()
    return row


async def add_photo(data_dir, conn: AsyncConnection, fid: int, state: str, photo: Photo, actor: str) -> None:
    """Store the file, then its row (a file without a row, left by a failed transaction, is never served)."""
    store_photo(data_dir, photo)
    await conn.execute(text(
        "INSERT INTO cases.photo (case_fid, sha256, state, content_type, bytes, width, height, added_by) "
        "VALUES (:fid, :sha, :state, :ct, :bytes, :w, :h, :by) ON CONFLICT DO NOTHING"),
        {"fid": fid, "sha": photo.sha256, "state": state, "ct": photo.content_type, "bytes": len(photo.content),
         "w": photo.width, "h": photo.height, "by": actor})


async def take_step(request: Request, principal: Principal, case_no: str, action: str, note: str | None,
                    department: str | None):
    """Move the case on by `action`; its row after the step."""
    step = loop.STEPS[action]
    async with write_transaction(request, principal.actor) as conn:
        moment = await claim(conn)
        case = await case_by_no(conn, case_no, lock=True)
        access.require_step(principal, case, step)
        if case.state not in step.sources:
            allowed = loop.allowed_from(case.state)
            raise ApiError(409, "illegal_transition", f"Case {case_no} is {case.state}: step {action} ({step.zh}) "
                           f"needs it to be {' or '.join(step.sources)}. Allowed now: {', '.join(allowed) or 'none'}.",
                           where="body.action")
        if step.needs_note and not (note and note.strip()):
            raise ApiError(422, "missing_note", f"Step {action} ({step.zh}) needs a note: the reason or the result.",
                           where="body.note")
        if department is not None and action != "dispatch":
            raise ApiError(422, "unexpected_department", "Only a dispatch names a department.", where="body.department")
        route = await routing.route(conn, case.class_code, case.grid_code, case.street_code)
        changes = {"state": step.target}
        if step.deadline:
            changes["stage_due"] = moment + timedelta(hours=route.hours[step.deadline])
        if action == "dispatch":
            changes["department"] = department or route.department
        elif action == "return":
            changes["department"] = None
        elif action == "reject":
            changes["reason"] = note
        elif action == "rework":
            changes["rework"] = case.rework + 1
        elif action == "close":
            changes["closed_at"] = moment
        assignments = ", ".join(f"{name} = :{name}" for name in changes)
        row = (await conn.execute(text(f"UPDATE layers.cases SET {assignments} WHERE fid = :fid RETURNING "
                                       + CASE_COLUMNS), changes | {"fid": case.fid})).one()
        entered = (await conn.execute(text("SELECT coalesce(max(at), CAST(:reported AS timestamptz)) FROM cases.step "
                                           "WHERE case_fid = :f"), {"f": case.fid, "reported": case.reported_at})).scalar()
        await conn.execute(text(
            "INSERT INTO cases.step (case_fid, action, from_state, to_state, actor, role, department, entered_at, "
            "due_at, at, note) VALUES (:fid, :action, :from, :to, :actor, :role, :department, :entered, :due, "
            ":moment, :note)"),
            {"fid": case.fid, "action": action, "from": case.state, "to": step.target, "actor": principal.actor,
             "role": "admin" if principal.is_admin else principal.role, "department": principal.department,
             "entered": entered, "due": case.stage_due, "moment": moment, "note": note})
        await conn.execute(text("INSERT INTO cases.tally (case_fid) VALUES (:fid) ON CONFLICT DO NOTHING"),
                           {"fid": case.fid})  # a case written outside the loop (an admin's correction) has none yet
        await conn.execute(text(
            "UPDATE cases.tally SET results = results + CAST(:result AS int), "
            "results_on_time = results_on_time + CAST(:result AND :on_time AS int), "
            "verifications = verifications + CAST(:verification AS int), failed = failed + CAST(:failed AS int), "
            "spent_s[:stage] = spent_s[:stage] + :spent, times_left[:stage] = times_left[:stage] + 1 "
            "WHERE case_fid = :fid"),
            {"fid": case.fid, "result": action == "feedback", "on_time": case.stage_due is None or moment <= case.stage_due,
             "verification": action in ("verify", "rework"), "failed": action == "rework",
             "stage": loop.OPEN.index(case.state) + 1, "spent": (moment - entered).total_seconds()})
    return row
