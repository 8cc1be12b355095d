"""Work a server process does beside answering requests (the listeners that follow the database)."""

import asyncio
import contextlib
from collections.abc import Coroutine


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
