"""Webhook delivery, worked by every server process's lifespan tasks (`webhook_workers` of them each).

A worker takes one due subscription with `FOR UPDATE SKIP LOCKED` (so any number of workers on any number
of servers share the work and never deliver one subscription twice at once), reads the change log after its
cursor, and POSTs the events it may see, up to `webhook_batch` in one request, oldest first. A 2xx moves the
cursor past them; anything else is retried after `webhook_backoff_s` doubling per failure (at most
`webhook_backoff_max_s`), and a subscription failing for `webhook_retry_s` (a day by default) is paused. Every
attempt is logged. The cursor lives in the database, so a restart resumes where delivery stopped: a receiver
sees each event at least once, in order, and its id (the change id) makes it idempotent.
"""

import asyncio
import hashlib
import hmac
import logging
import time

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import text

from events import feed
from events.feed import Interest
from twin import metrics
from twin.auth import Principal
from twin.tasks import failed_round

log = logging.getLogger("events.delivery")
IDLE_S = 1  # a worker with nothing due looks again this often (and whenever the hub has new events)

DUE = text(
    "SELECT w.id, w.url, w.topics, w.layers, w.secret, w.cursor, w.failures, w.failing_since, "
    "k.id AS key_id, k.prefix, k.department, k.layers AS key_layers, k.is_admin, k.revoked_at IS NOT NULL AS revoked "
    "FROM events.webhook w JOIN twin.api_key k ON k.id = w.key_id "
    "WHERE w.state = 'active' AND w.next_at <= now() AND w.cursor < :position "
    "ORDER BY w.next_at LIMIT 1 FOR UPDATE OF w SKIP LOCKED")


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _pause(conn, hook: int, reason: str) -> None:
    await conn.execute(text("UPDATE events.webhook SET state = 'paused', paused_reason = :reason WHERE id = :id"),
                       {"id": hook, "reason": reason})


async def deliver_one(app: FastAPI, client: httpx.AsyncClient) -> bool:
    """Deliver to one due subscription; False when none was due."""
    settings, hub = app.state.settings, app.state.event_hub
    async with app.state.engine.begin() as conn:
        hook = (await conn.execute(DUE, {"position": hub.position})).first()
        if hook is None:
            return False
        if hook.revoked:
            await _pause(conn, hook.id, f"the key {hook.prefix} that made it was revoked")
            return True
        principal = Principal(hook.key_id, hook.prefix, hook.department, tuple(hook.key_layers), hook.is_admin)
        wanted = Interest(frozenset(hook.topics), None if hook.layers is None else frozenset(hook.layers), principal)
        events = await feed.read(conn, hook.cursor, settings.webhook_batch)
        sent = [e for e in events if wanted.wants(e, app.state.access)]
        if not sent:
            await conn.execute(text("UPDATE events.webhook SET cursor = :cursor WHERE id = :id"),
                               {"id": hook.id, "cursor": events[-1].id if events else hook.cursor})
            return bool(events)
        body = orjson.dumps({"webhook": hook.id, "events": [{"topic": e.topic, **e.body} for e in sent]})
        started, status, error = time.perf_counter(), None, None
        try:
            answer = await client.post(hook.url, content=body, headers={
                "Content-Type": "application/json", "X-Twin-Signature": signature(hook.secret, body),
                "X-Twin-Webhook": str(hook.id), "X-Twin-Events": f"{sent[0].id}-{sent[-1].id}"})
            status = answer.status_code
            if not 200 <= status < 300:
                error = answer.text[:200]
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:200]
        seconds = time.perf_counter() - started
        await conn.execute(text(
            "INSERT INTO events.webhook_attempt (webhook_id, first_event, last_event, events, status, error, seconds) "
            "VALUES (:id, :first, :last, :n, :status, :error, :seconds)"),
            {"id": hook.id, "first": sent[0].id, "last": sent[-1].id, "n": len(sent), "status": status,
             "error": error, "seconds": seconds})
        if error is None:
            metrics.webhook_events.labels("delivered").inc(len(sent))
            await conn.execute(text("UPDATE events.webhook SET cursor = :cursor, failures = 0, failing_since = NULL, "
                                    "next_at = now() WHERE id = :id"), {"id": hook.id, "cursor": events[-1].id})
            return True
        metrics.webhook_events.labels("failed").inc(len(sent))
        backoff = min(settings.webhook_backoff_s * 2 ** hook.failures, settings.webhook_backoff_max_s)
        failing = (await conn.execute(text(
            "UPDATE events.webhook SET failures = failures + 1, failing_since = coalesce(failing_since, now()), "
            "next_at = now() + make_interval(secs => :backoff) WHERE id = :id "
            "RETURNING extract(epoch FROM now() - failing_since)"), {"id": hook.id, "backoff": backoff})).scalar()
        if failing >= settings.webhook_retry_s:
            await _pause(conn, hook.id, f"failing since {failing:.0f} s: {error}")
        return True


async def work(app: FastAPI, number: int) -> None:
    async with httpx.AsyncClient(timeout=app.state.settings.webhook_timeout_s) as client:
        while True:
            try:
                busy = await deliver_one(app, client)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database gone for a moment: try again shortly, the cursor is safe
                failed_round(log, f"webhook worker {number} failed", e)
                busy = False
            if not busy:
                await app.state.event_hub.wait(IDLE_S)
