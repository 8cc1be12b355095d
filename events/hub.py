"""The event hub: one per server process, it follows the change log and hands each new event to its listeners.

It LISTENs on `twin_change` (every writing statement notifies at commit, migration 0003) and on each notice
reads the change log forward from the last id it handed out, once for all its listeners. So any server serves
any client: a listener's position is a change id, never something this process remembers. A listener has a
bounded queue; one that falls `queue_size` events behind (a client that does not read) is dropped, its queue
let go, and it resumes from its last id when it comes back. The webhook and MQTT workers wait on `woken`.
"""

import asyncio
import contextlib
import logging

import psycopg

from events import feed
from events.feed import Event, Interest
from twin import metrics
from twin.access import LayerAccess

log = logging.getLogger("events.hub")
CHANNEL = "twin_change"
PAGE = 500
QUIET_S = 30  # the log is read again this often even without a notice (a notice lost with its connection)


class Listener:
    def __init__(self, interest: Interest, queue_size: int):
        self.interest = interest
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(queue_size)
        self.dropped = False


NAMES = {"changes": b"change", "alerts": b"alert", "observations": b"observation"}  # the SSE event type, by topic


def frame(event: Event) -> bytes:
    """The event as Server-Sent Events text."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, NAMES[event.topic], event.json())


class Hub:
    def __init__(self, engine, access: LayerAccess, url: str, queue_size: int):
        self.engine, self.access, self.url, self.queue_size = engine, access, url, queue_size
        self.listeners: set[Listener] = set()
        self.position = 0  # the last change id handed out
        self.closing = False
        self.woken = asyncio.Condition()

    def close(self) -> None:
        """The server is stopping: every stream ends now (its client resumes elsewhere by id), so the server's
        graceful shutdown, which waits for open responses, is not held up by streams that never end."""
        self.closing = True
        for listener in list(self.listeners):
            listener.dropped = True
            self.forget(listener)
            with contextlib.suppress(asyncio.QueueFull):
                listener.queue.put_nowait((0, b""))  # wakes its stream

    def listen(self, interest: Interest) -> Listener:
        listener = Listener(interest, self.queue_size)
        self.listeners.add(listener)
        metrics.stream_clients.inc()
        return listener

    def forget(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.discard(listener)
            metrics.stream_clients.dec()

    def _offer(self, event: Event) -> None:
        text = None
        for listener in list(self.listeners):
            if not listener.interest.wants(event, self.access):
                continue
            text = text or frame(event)
            try:
                listener.queue.put_nowait((event.id, text))
            except asyncio.QueueFull:
                listener.dropped = True
                self.forget(listener)
                while not listener.queue.empty():  # what it held is let go; its stream ends at its next turn
                    listener.queue.get_nowait()
                metrics.stream_dropped.inc()

    async def catch_up(self) -> None:
        while True:
            async with self.engine.connect() as conn:
                if not self.listeners:  # nobody to hand them to (a bulk load's million changes are not read)
                    last = await feed.last_id(conn)
                    if not self.listeners:  # still none (one that came meanwhile started at the old position)
                        if last > self.position:
                            self.position = last
                            async with self.woken:
                                self.woken.notify_all()
                        return
                events = await feed.read(conn, self.position, PAGE)
            for event in events:
                self._offer(event)
            if events:
                self.position = events[-1].id
                async with self.woken:
                    self.woken.notify_all()
            if len(events) < PAGE:
                return

    async def run(self) -> None:
        """Follow the log from `position` (set before the first listener comes)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                                 application_name="twin-event-hub") as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    while True:
                        await self.catch_up()
                        async for _ in conn.notifies(timeout=QUIET_S, stop_after=1):
                            pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a lost connection: listen again, reading what was missed meanwhile
                log.warning("event hub lost its connection (%s); reconnecting", e)
                await asyncio.sleep(1)

    async def wait(self, timeout: float) -> None:
        """Until the hub hands out new events, or `timeout` seconds."""
        async with self.woken:
            try:
                await asyncio.wait_for(self.woken.wait(), timeout)
            except TimeoutError:
                pass
