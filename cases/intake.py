"""Taking a report in, from the loop's JSON API and from Open311 alike: who reports (an anonymous member of the
public, limited per client address, or a key), its source, the Idempotency-Key, its photos."""

import hashlib
import json

from fastapi import Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from cases import store
from cases.photos import accept
from twin.auth import Principal, authenticate
from twin.errors import ApiError

SOURCES = ("公众", "监督员", "12345热线", "告警")
DEFAULT_SOURCE = {"supervisor": "监督员", "reporter": "12345热线", "dispatcher": "12345热线"}
PUBLIC_ACTOR = "公众"  # anonymous reports in the change log: never the reporter's address


async def reporter(request: Request) -> Principal | None:
    """The key behind a report, None for an anonymous one (a bad key is still a 401)."""
    return await authenticate(request) if request.headers.get("authorization") else None


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _limit_rate(request: Request, client: str) -> None:
    limit = request.app.state.settings.cases_reports_per_hour
    async with request.app.state.engine.connect() as conn:
        recent = (await conn.execute(text(
            "SELECT count(*) FROM cases.reporter WHERE client = :c AND reported_at > now() - interval '1 hour'"),
            {"c": client})).scalar()
    if recent >= limit:
        raise ApiError(429, "too_many_reports", f"At most {limit} anonymous reports an hour from one address; "
                       "retry later, or report through the 12345 hotline.", headers={"Retry-After": "600"})


def source_of(principal: Principal | None, asked: str | None) -> str:
    if principal is None:
        if asked not in (None, "公众"):
            raise ApiError(403, "source_needs_key", f"A report from source {asked} needs a key; anonymous reports are "
                           "from the public (公众).", where="body.source")
        return "公众"
    source = asked or DEFAULT_SOURCE.get(principal.role, "12345热线")
    if source not in SOURCES:
        raise ApiError(422, "unknown_source", f"Unknown source {source[:40]!r}: one of {', '.join(SOURCES)}.",
                       where="body.source")
    return source


async def take(request: Request, principal: Principal | None, fields: dict, encoded_photos: list[bytes],
               idempotency_key: str | None):
    """Make a case of a report (or find the one its Idempotency-Key made); (its row, whether it is new)."""
    client = client_of(request)
    request_sha256 = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()
                                    + b"".join(hashlib.sha256(p).digest() for p in encoded_photos)).hexdigest()
    if idempotency_key is not None:
        if not 8 <= len(idempotency_key) <= 200:
            raise ApiError(400, "invalid_idempotency_key", "An Idempotency-Key has 8 to 200 characters.",
                           where="header.Idempotency-Key")
        async with request.app.state.engine.connect() as conn:
            if (known := await store.replay(conn, idempotency_key, request_sha256)) is not None:
                return known, False
    if principal is None:
        await _limit_rate(request, client)
    photos = [await run_in_threadpool(accept, content, f"body.photos[{i}]") for i, content in enumerate(encoded_photos)]
    item = store.Report(lon=fields.get("lon"), lat=fields.get("lat"), class_code=fields.get("class_code"),
                        description=fields.get("description"), source=source_of(principal, fields.get("source")),
                        component_code=fields.get("component_code"), contact=fields.get("contact") or {},
                        client=client if principal is None else f"key:{principal.prefix}", photos=photos)
    actor = PUBLIC_ACTOR if principal is None else principal.actor
    key = None if idempotency_key is None else (idempotency_key, request_sha256)
    try:
        return await store.report(request, actor, item, key), True
    except store.Replayed:  # the same key won a race with this report meanwhile
        async with request.app.state.engine.connect() as conn:
            return await store.replay(conn, idempotency_key, request_sha256), False
