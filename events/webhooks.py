"""`/webhooks/…`: subscriptions made with a key (a URL, topics and layers), their state and delivery log.

Each subscription reads the change log from its own cursor (events.delivery), so deliveries are in order and
survive restarts. Its secret is shown once, at creation: the receiver checks each delivery's
`X-Twin-Signature: sha256=<HMAC-SHA256 of the body>` with it. Only the key's department (or an admin) sees or
changes a subscription; deliveries carry only what that key may read.
"""

import secrets

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from sqlalchemy import text

from events import feed
from events.stream import interest
from layers.changelog import json_response
from twin.auth import Principal, authenticate
from twin.errors import ApiError

router = APIRouter(prefix="/webhooks", tags=["events"])
WEBHOOK_ID = Path(ge=1, le=2 ** 63 - 1)
PUBLIC = ("id, department, url, topics, layers, cursor, state, paused_reason, failures, failing_since, next_at, "
          "created_at")


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    topics: list[str] = Field(["changes", "alerts", "observations"], min_length=1)
    layers: list[str] | None = Field(None, min_length=1)
    after: int | None = Field(None, ge=0, le=2 ** 63 - 1, description="the last change id not wanted; now if absent")


class Switch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: str = Field(pattern="^(active|paused)$")


def hook_json(row) -> dict:
    return dict(row._mapping)


async def _owned(conn, principal: Principal, webhook: int, lock: bool = False):
    row = (await conn.execute(text(f"SELECT {PUBLIC} FROM events.webhook WHERE id = :id"
                                   + (" FOR UPDATE" if lock else "")), {"id": webhook})).first()
    if row is None or not (principal.is_admin or principal.department == row.department):
        raise ApiError(404, "not_found", f"no webhook {webhook} of {principal.department}", where="path.webhook")
    return row


@router.post("", status_code=201)
async def subscribe(request: Request, body: Subscription = Body(...)):
    """Subscribe a URL to events; the answer holds the signing secret, shown this once."""
    principal = await authenticate(request)
    wanted = interest(body.topics, body.layers, principal, "body")
    secret = secrets.token_urlsafe(32)
    async with request.app.state.engine.begin() as conn:
        after = body.after if body.after is not None else await feed.last_id(conn)
        row = (await conn.execute(text(
            "INSERT INTO events.webhook (key_id, department, url, topics, layers, secret, cursor) "
            "VALUES (:key, :department, :url, :topics, :layers, :secret, :cursor) RETURNING " + PUBLIC),
            {"key": principal.key_id, "department": principal.department, "url": str(body.url),
             "topics": sorted(wanted.topics), "layers": None if wanted.layers is None else sorted(wanted.layers),
             "secret": secret, "cursor": after})).one()
    return json_response(hook_json(row) | {"secret": secret}, status=201)


@router.get("")
async def list_webhooks(request: Request):
    """The key's department's subscriptions (every one for an admin)."""
    principal = await authenticate(request)
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT {PUBLIC} FROM events.webhook "
                                        "WHERE :admin OR department = :department ORDER BY id"),
                                   {"admin": principal.is_admin, "department": principal.department})).all()
    return json_response({"webhooks": [hook_json(r) for r in rows]})


@router.get("/{webhook}")
async def get_webhook(request: Request, webhook: int = WEBHOOK_ID):
    """A subscription: its state (paused after failing for `webhook_retry_s`, with the reason), failures, cursor."""
    principal = await authenticate(request)
    async with request.app.state.engine.connect() as conn:
        return json_response(hook_json(await _owned(conn, principal, webhook)))


@router.patch("/{webhook}")
async def switch_webhook(request: Request, webhook: int = WEBHOOK_ID, body: Switch = Body(...)):
    """Pause or resume a subscription; a resumed one is tried at once, from where it stopped."""
    principal = await authenticate(request)
    async with request.app.state.engine.begin() as conn:
        await _owned(conn, principal, webhook, lock=True)
        row = (await conn.execute(text(
            "UPDATE events.webhook SET state = :state, next_at = now(), "
            "paused_reason = CASE WHEN :state = 'paused' THEN 'paused by ' || :actor END, "
            "failures = CASE WHEN :state = 'active' THEN 0 ELSE failures END, "
            "failing_since = CASE WHEN :state = 'active' THEN NULL ELSE failing_since END "
            f"WHERE id = :id RETURNING {PUBLIC}"),
            {"state": body.state, "actor": principal.actor, "id": webhook})).one()
    return json_response(hook_json(row))


@router.delete("/{webhook}", status_code=204)
async def unsubscribe(request: Request, webhook: int = WEBHOOK_ID):
    principal = await authenticate(request)
    async with request.app.state.engine.begin() as conn:
        await _owned(conn, principal, webhook, lock=True)
        await conn.execute(text("DELETE FROM events.webhook WHERE id = :id"), {"id": webhook})


@router.get("/{webhook}/deliveries")
async def deliveries(request: Request, webhook: int = WEBHOOK_ID, limit: int = Query(100, ge=1, le=1000),
                     before: int | None = Query(None, ge=1, description="attempts before this attempt id")):
    """The delivery log, newest first: each attempt's events, HTTP status or error, and time taken."""
    principal = await authenticate(request)
    async with request.app.state.engine.connect() as conn:
        await _owned(conn, principal, webhook)
        rows = (await conn.execute(text(
            "SELECT id, at, first_event, last_event, events, status, error, seconds FROM events.webhook_attempt "
            "WHERE webhook_id = :id AND id < coalesce(:before, 9223372036854775807) ORDER BY id DESC LIMIT :limit"),
            {"id": webhook, "before": before, "limit": limit})).all()
    return json_response({"deliveries": [dict(r._mapping) for r in rows]})
