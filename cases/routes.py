"""The loop's JSON API under /cases: report, list (a queue), one case with its timeline and photos, steps, photos."""

import base64
import binascii
from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from cases import access, intake, loop, store
from cases.photos import PER_REPORT, accept, path_of
from twin.auth import Principal, authenticate
from twin.errors import ApiError

router = APIRouter(prefix="/cases", tags=["cases"])
CASE_NO = Path(pattern=r"^[A-Z0-9]{1,40}$", description="the case number, e.g. XW202612060000001")


class Contact(BaseModel):
    name: str | None = Field(None, max_length=100)
    phone: str | None = Field(None, max_length=40)
    email: str | None = Field(None, max_length=200)


class ReportBody(BaseModel):
    """A report (上报). Give `class_code` and a position, or `component_code` for a component problem (its class and,
    when lon/lat are left out, its position come from the component)."""
    class_code: str | None = Field(None, max_length=10, examples=["E0102"])
    lon: float | None = Field(None, ge=-180, le=180, description="WGS84 longitude")
    lat: float | None = Field(None, ge=-90, le=90, description="WGS84 latitude")
    description: str | None = Field(None, max_length=2000)
    component_code: str | None = Field(None, max_length=16)
    source: Literal["公众", "监督员", "12345热线", "告警"] | None = None
    contact: Contact | None = Field(None, description="private: read only by dispatchers and supervisors")
    photos: list[str] = Field([], max_length=PER_REPORT, description="JPEG or PNG photos, base64")


class StepBody(BaseModel):
    action: Literal[tuple(loop.STEPS)] = Field(description="; ".join(f"{s.action}: {s.zh} ({'/'.join(s.sources)} → "
                                                                     f"{s.target}, by {'/'.join(s.roles)})"
                                                                     for s in loop.STEPS.values()))
    note: str | None = Field(None, max_length=2000, description="the reason (不予立案, 退回, 核查不通过) or result (反馈)")
    department: str | None = Field(None, max_length=100, description="dispatch only: another department than the "
                                                                      "responsibility table's")


def now() -> datetime:
    return datetime.now(timezone.utc)


def json_answer(body, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(_plain(body), status, headers)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value


def _decoded(photos: list[str]) -> list[bytes]:
    out = []
    for i, encoded in enumerate(photos):
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_base64", "A photo in a report is base64 (RFC 4648).",
                           where=f"body.photos[{i}]") from None
    return out


@router.post("", status_code=201, summary="Report a case (上报): anonymously (rate-limited per address) or with a key")
async def report_case(body: ReportBody, request: Request,
                      idempotency_key: str | None = Header(None, description="the same key sent again returns the "
                                                                              "case it made instead of a new one")):
    principal = await intake.reporter(request)
    fields = body.model_dump(exclude={"photos"}, exclude_none=True)
    row, created = await intake.take(request, principal, fields, _decoded(body.photos), idempotency_key)
    headers = {"Location": f"/cases/{row.case_no}"} | ({} if created else {"Idempotent-Replayed": "true"})
    return json_answer(store.case_json(row, now()), 201 if created else 200, headers)


@router.get("", summary="Cases the key sees, by deadline: a queue filtered by state, overdue, department, grid, class")
async def list_cases(request: Request, principal: Principal = Depends(authenticate),
                     state: list[Literal[loop.STATES]] = Query([], description="repeat for several; default: any"),
                     open_only: bool = Query(False, alias="open", description="only cases not 结案 or 不予立案"),
                     overdue: bool | None = Query(None, description="only cases past (true) or within (false) their "
                                                                   "stage's deadline"),
                     department: str | None = Query(None, max_length=100), grid: str | None = Query(None, max_length=40),
                     class_code: str | None = Query(None, max_length=10, description="a class or class prefix"),
                     limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=100_000)):
    access.require_loop_role(principal)
    where, bound = access.scope_filter(principal)
    conditions = [where]
    bound |= {"now": now(), "limit": limit + 1, "offset": offset}
    if state:
        conditions.append("c.state = ANY(:states)")
        bound["states"] = list(state)
    if open_only or overdue:
        conditions.append("c." + loop.OPEN_SQL)
    if overdue is not None:
        conditions.append("c.stage_due < :now" if overdue else f"NOT coalesce(c.stage_due < :now AND c.{loop.OPEN_SQL}, false)")
    for name, value, test in (("department", department, "c.department = :department"),
                              ("grid", grid, "c.grid_code = :grid"),
                              ("class_code", class_code, "starts_with(c.class_code, :class_code)")):
        if value is not None:
            conditions.append(test)
            bound[name] = value
    async with request.app.state.read_engine.connect() as conn:
        rows = (await conn.execute(text(
            f"SELECT {store.CASE_COLUMNS} FROM layers.cases c WHERE {' AND '.join(conditions)} "
            "ORDER BY c.stage_due NULLS LAST, c.fid LIMIT :limit OFFSET :offset"), bound)).all()
    moment = now()
    body = {"cases": [store.case_json(r, moment) for r in rows[:limit]], "numberReturned": min(len(rows), limit)}
    if len(rows) > limit:
        body["next"] = str(request.url.include_query_params(offset=offset + limit))
    return json_answer(body)


@router.get("/{case_no}", summary="One case with its timeline (每一步), photos, possible duplicates and, for "
                                  "dispatchers and supervisors, the reporter's contact")
async def get_case(request: Request, case_no: str = CASE_NO, principal: Principal = Depends(authenticate)):
    async with request.app.state.read_engine.connect() as conn:
        case = await store.case_by_no(conn, case_no)
        access.require_sight(principal, case)
        steps = (await conn.execute(text(
            "SELECT action, from_state, to_state, actor, role, department, entered_at, due_at, at, note "
            "FROM cases.step WHERE case_fid = :f ORDER BY id"), {"f": case.fid})).all()
        photos = (await conn.execute(text(
            "SELECT sha256, state, content_type, bytes, width, height, added_by, added_at FROM cases.photo "
            "WHERE case_fid = :f ORDER BY added_at, sha256"), {"f": case.fid})).all()
        duplicates = (await conn.execute(text("SELECT case_no FROM layers.cases WHERE duplicate_of = :no ORDER BY fid"),
                                         {"no": case_no})).scalars().all()
        alert = (await conn.execute(text("SELECT alert_fid, alert_code FROM cases.alert_case WHERE case_fid = :f"),
                                    {"f": case.fid})).first()
        contact = (await conn.execute(text("SELECT contact FROM cases.reporter WHERE case_fid = :f"),
                                      {"f": case.fid})).scalar() if access.reads_contact(principal) else None
    body = store.case_json(case, now())
    body["steps"] = [dict(s._mapping) | {"on_time": None if s.due_at is None else s.at <= s.due_at} for s in steps]
    body["photos"] = [dict(p._mapping) | {"href": f"/cases/{case_no}/photos/{p.sha256}"} for p in photos]
    body["possible_duplicates"] = list(duplicates)
    if alert is not None:  # opened by an alert (cases.from_alerts)
        body["alert"] = {"fid": alert.alert_fid, "code": alert.alert_code,
                         "href": f"/collections/alerts/items/{alert.alert_fid}"}
    if contact is not None:
        body["contact"] = contact
    return json_answer(body)


@router.post("/{case_no}/steps", summary="Take a step of the loop; 409 with the allowed steps when the case's "
                                         "state does not allow it")
async def take_step(body: StepBody, request: Request, case_no: str = CASE_NO,
                    principal: Principal = Depends(authenticate)):
    row = await store.take_step(request, principal, case_no, body.action, body.note, body.department)
    return json_answer(store.case_json(row, now()))


@router.post("/{case_no}/photos", status_code=201,
             summary="Add a photo (the request body: JPEG or PNG bytes) to the case at its current stage",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                 "image/png": {"schema": {"type": "string", "format": "binary"}}}}})
async def add_photo(request: Request, case_no: str = CASE_NO, principal: Principal = Depends(authenticate)):
    photo = await run_in_threadpool(accept, await request.body())
    async with request.app.state.engine.begin() as conn:
        case = await store.case_by_no(conn, case_no)
        access.require_sight(principal, case)
        await store.add_photo(request.app.state.settings.data_dir, conn, case.fid, case.state, photo, principal.actor)
    return json_answer({"sha256": photo.sha256, "content_type": photo.content_type, "bytes": len(photo.content),
                  "width": photo.width, "height": photo.height, "state": case.state,
                  "href": f"/cases/{case_no}/photos/{photo.sha256}"}, 201)


@router.get("/{case_no}/photos/{sha256}", summary="A case's photo, to keys that see the case",
            response_class=FileResponse)
async def get_photo(request: Request, case_no: str = CASE_NO, sha256: str = Path(pattern=r"^[0-9a-f]{64}$"),
                    principal: Principal = Depends(authenticate)):
    async with request.app.state.read_engine.connect() as conn:
        case = await store.case_by_no(conn, case_no)
        access.require_sight(principal, case)
        content_type = (await conn.execute(text("SELECT content_type FROM cases.photo WHERE case_fid = :f AND "
                                                "sha256 = :s"), {"f": case.fid, "s": sha256})).scalar()
    if content_type is None:
        raise ApiError(404, "unknown_photo", f"Case {case_no} has no photo {sha256}.", where="path.sha256")
    return FileResponse(path_of(request.app.state.settings.data_dir, sha256, content_type), media_type=content_type,
                        headers={"Cache-Control": "private, max-age=86400"})
