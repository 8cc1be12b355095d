"""Work a server process does beside answering requests (the listeners that follow the database)."""

import asyncio
import contextlib
import logging
from collections.abc import Coroutine

from twin.errors import UNAVAILABLE


@contextlib.asynccontextmanager
async def in_background(work: Coroutine, name: str):
    """`work` runs as a task for the life of the block and is cancelled at its end."""
    task = asyncio.create_task(work, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def failed_round(log: logging.Logger, what: str, exc: Exception) -> None:
    """A round of background work that failed and will be tried again: a warning line when the database is
    away (a restart, expected), the whole traceback otherwise."""
    if isinstance(exc, UNAVAILABLE):
        reason = str(exc).strip().splitlines()
        log.warning("%s: the database is unavailable (%s: %s); retrying", what, type(exc).__name__,
                    reason[0] if reason else "")
    else:
        log.error("%s; retrying", what, exc_info=exc)
