"""Following a NOTIFY channel on a connection of its own: read the state once, then again on each notice (and every
`poll_s` anyway); a dropped connection is logged and reconnected a second later."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

log = logging.getLogger("twin.notices")


async def follow(url: str, channel: str, name: str, load: Callable[[psycopg.AsyncConnection], Awaitable[None]],
                 live: Callable[[bool], None] = lambda connected: None, poll_s: float = 30) -> None:
    """`load(conn)` reads the state; `live(connected)` is told when notices are (or stop being) followed."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=name) as conn:
                await conn.execute(f"LISTEN {channel}")
                await load(conn)
                live(True)
                while True:
                    async for _ in conn.notifies(timeout=poll_s, stop_after=1):
                        pass
                    await load(conn)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("%s lost its connection (%s); reconnecting", name, e)
        live(False)
        await asyncio.sleep(1)
