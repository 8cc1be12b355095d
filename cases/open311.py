"""Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2) for public and third-party apps: services are the
case classes, service requests the cases, with public fields only (never the reporter's contact). JSON only
(`.json`). Errors are in GeoReport v2's form (GeoReportRoute). A request is `open` until 结案 or 不予立案, then
`closed`."""

from datetime import datetime, timedelta, timezone
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text

from cases import intake, loop, store
from cases.classes import case_classes
from twin import errors
from twin.errors import ApiError


def georeport_errors(status: int, descriptions: list[str], headers: dict | None = None) -> JSONResponse:
    if status == 503 and not any(k.lower() == "retry-after" for k in headers or {}):
        headers = (headers or {}) | {"Retry-After": str(errors.RETRY_AFTER_S)}
    return JSONResponse([{"code": status, "description": d} for d in descriptions], status, headers)


def _described(detail: str, where) -> str:
    return detail if where is None else f"{detail} (where: {where})"


class GeoReportRoute(APIRoute):
    """GeoReport v2 clients read errors as a JSON array of {code: the HTTP status, description}: the house's
    errors (code, description, where) are answered so on these paths, `where` folded into the description."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def answer(request: Request):
            try:
                return await handler(request)
            except ApiError as e:
                return georeport_errors(e.status, [_described(e.detail, e.where)], e.headers)
            except RequestValidationError as e:
                return georeport_errors(400, [_described(x["msg"], ".".join(map(str, x["loc"]))) for x in e.errors()])
            except errors.UNAVAILABLE as e:
                error = errors.unavailable(e)
                return georeport_errors(error.status, [error.detail], error.headers)

        return answer


# What a middleware refuses before any route runs (a NUL in the URL, an oversized body) has the house's form.
GEOREPORT_ERRORS = {"description": "GeoReport v2 errors (or the house's error, for a refusal before routing)",
                    "content": {"application/json": {"schema": {"anyOf": [
                        {"type": "array", "items": {"type": "object", "required": ["code", "description"], "properties": {
                            "code": {"type": "integer"}, "description": {"type": "string"}}}},
                        {"$ref": "#/components/schemas/Error"}]}}}}
router = APIRouter(prefix="/open311/v2", tags=["open311"], route_class=GeoReportRoute,
                   responses={status: GEOREPORT_ERRORS for status in (400, 403, 404, 409, 415, 422, 429, 503)})
MAX_REQUESTS = 1000  # GeoReport v2: at most 1000 requests a listing
DEFAULT_DAYS = 90  # without dates, the last 90 days


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def request_json(row) -> dict:
    return {"service_request_id": row.case_no, "status": "closed" if row.state in loop.FINAL else "open",
            "status_notes": row.reason if row.state == loop.REJECTED else row.state,
            "service_name": row.class_name, "service_code": row.class_code, "description": row.description,
            "agency_responsible": row.department, "service_notice": None,
            "requested_datetime": _iso(row.reported_at), "updated_datetime": _iso(row.updated_at),
            "expected_datetime": None if row.state in loop.FINAL else _iso(row.stage_due),
            "address": None, "address_id": row.grid_code, "zipcode": None, "lat": row.lat, "long": row.lon,
            "media_url": None}


@router.get("/services.json", summary="The service list: one service per case class")
async def services(jurisdiction_id: str | None = None):
    return [{"service_code": c.code, "service_name": c.name, "description": f"{c.kind}: {c.group} / {c.name}",
             "metadata": False, "type": "realtime", "keywords": c.kind, "group": c.group}
            for c in case_classes().values()]


def _moment(value: str | None, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid_datetime", f"{value[:40]!r} is not a W3C datetime "
                       "(e.g. 2026-12-01T00:00:00+08:00).", where=where) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone(timedelta(hours=8)))


@router.get("/requests.json", summary="Service requests, newest first: by ids, or by service_code, status and "
                                      "dates (the last 90 days without dates; 1000 at most)")
async def requests(request: Request,
                   service_request_id: str | None = Query(None, max_length=2000, description="comma-separated ids"),
                   service_code: str | None = Query(None, max_length=500, description="comma-separated codes"),
                   start_date: str | None = None, end_date: str | None = None,
                   status: str | None = Query(None, description="open, closed or both, comma-separated"),
                   jurisdiction_id: str | None = None):
    conditions, bound = [], {"limit": MAX_REQUESTS}
    if service_request_id is not None:
        conditions.append("case_no = ANY(:ids)")
        bound["ids"] = [i.strip() for i in service_request_id.split(",") if i.strip()]
    else:
        start, end = _moment(start_date, "query.start_date"), _moment(end_date, "query.end_date")
        if start is None:
            start = (end or datetime.now(timezone.utc)) - timedelta(days=DEFAULT_DAYS)
        conditions.append("reported_at >= :start")
        bound["start"] = start
        if end is not None:
            conditions.append("reported_at <= :end")
            bound["end"] = end
        if service_code is not None:
            codes = [c.strip() for c in service_code.split(",") if c.strip()]
            if unknown := [c for c in codes if c not in case_classes()]:
                raise ApiError(400, "unknown_service_code", f"Unknown service_code {unknown[0][:20]!r} "
                               "(see services.json).", where="query.service_code")
            conditions.append("class_code = ANY(:codes)")
            bound["codes"] = codes
        if status is not None:
            wanted = {s.strip() for s in status.split(",")}
            if not wanted <= {"open", "closed"}:
                raise ApiError(400, "invalid_status", "status is open, closed or open,closed.", where="query.status")
            if wanted == {"open"}:
                conditions.append("state <> ALL(:final)")
            elif wanted == {"closed"}:
                conditions.append("state = ANY(:final)")
            bound["final"] = list(loop.FINAL)
    async with request.app.state.read_engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT {store.CASE_COLUMNS} FROM layers.cases WHERE "
                                        f"{' AND '.join(conditions)} ORDER BY reported_at DESC, fid DESC "
                                        "LIMIT :limit"), bound)).all()
    return [request_json(r) for r in rows]


@router.get("/requests/{service_request_id}.json", summary="One service request")
async def one_request(request: Request, service_request_id: str = Path(pattern=r"^[A-Z0-9]{1,40}$")):
    async with request.app.state.read_engine.connect() as conn:
        row = await store.case_by_no(conn, service_request_id)
    return [request_json(row)]


async def _fields(request: Request) -> dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "invalid_json", "The body is not JSON.", where="body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", "The body is a JSON object of GeoReport fields.", where="body")
        return body
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return dict(await request.form())
    raise ApiError(415, "unsupported_body", "Send the request form-encoded (GeoReport v2) or as JSON.", where="body")


def _float(fields: dict, name: str) -> float | None:
    value = fields.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_number", f"{name} is a number (WGS84 degrees).", where=f"body.{name}") from None


@router.post("/requests.json", status_code=201, summary="Create a service request (a public report: lat, long, "
                                                        "service_code, description; contact fields stay private)")
async def create_request(request: Request, idempotency_key: str | None = Header(None)):
    fields = await _fields(request)
    lat, lon = _float(fields, "lat"), _float(fields, "long")
    if lat is None or lon is None:
        raise ApiError(400, "missing_location", "A request needs lat and long (this server does not geocode "
                       "address_string).", where="body.lat")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ApiError(400, "invalid_location", "lat and long are WGS84 degrees.", where="body.lat")
    contact = {k: str(fields[k])[:200] for k in ("email", "first_name", "last_name", "phone") if fields.get(k)}
    report = {"lon": lon, "lat": lat, "class_code": str(fields.get("service_code") or "")[:10] or None,
              "description": str(fields.get("description") or "")[:2000] or None, "contact": contact}
    principal = await intake.reporter(request)
    row, created = await intake.take(request, principal, report, [], idempotency_key)
    notice = f"疑似与 {row.duplicate_of} 重复" if row.duplicate_of else None
    return JSONResponse([{"service_request_id": row.case_no, "service_notice": notice,
                          "account_id": fields.get("account_id")}], 201 if created else 200)
