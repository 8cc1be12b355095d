"""The transaction of an HTTP write: who writes (for the change log), how long it may wait, and the
database's refusals turned into 4xx answers."""

from contextlib import asynccontextmanager

from fastapi import Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from layers.store import set_write_context
from twin.errors import ApiError

LOCK_WAIT = "10s"  # writers queue on the change-log lock; a bulk load can hold it this long before we give up


@asynccontextmanager
async def write_transaction(request: Request, actor: str):
    try:
        async with request.app.state.engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
            await conn.run_sync(set_write_context, actor)
            yield conn
    except DBAPIError as e:
        state = getattr(e.orig, "sqlstate", None)
        if state in ("55P03", "57014"):  # lock wait or statement timed out
            raise ApiError(503, "busy", "Another write (a bulk load?) holds the layer; retry shortly.",
                           headers={"Retry-After": "10"}) from None
        if state == "23505":
            detail = getattr(getattr(e.orig, "diag", None), "message_detail", None) or str(e.orig)
            raise ApiError(409, "key_taken", f"Another feature already has this key: {detail}",
                           where="properties") from None
        raise
