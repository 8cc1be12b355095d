"""The event hub: one per server process, it follows the change log and hands each new event to its listeners.

It LISTENs on `twin_change` (every writing statement notifies at commit, migration 0003) and on each notice
reads the change log forward from the last id it handed out, once for all its listeners. So any server serves
any client: a listener's position is a change id, never something this process remembers. The readings of
Datastreams (`observations` events of events.observation_event, one per stored reading) are read only while a
listener wants the `observations` topic; else their ids are passed over unread. Listeners that asked
for the same thing with the same key are one group, asked once per event whether they want it; the event's
frame is encoded once. A listener holds the frames handed to it until its stream writes them; one that falls
`queue_size` events behind (a client that does not read) is dropped, what it held let go, and it resumes from
its last id when it comes back. One clock, not a timer per stream, marks a heartbeat due on the listeners handed
nothing since its last tick. The webhook and MQTT workers wait on `woken`.
"""

import asyncio
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
    """One stream's place at the hub: the frames handed to it and not written yet, in the order of their ids."""
    __slots__ = ("interest", "limit", "frames", "quiet", "beat", "dropped", "waiter")

    def __init__(self, interest: Interest, limit: int):
        self.interest, self.limit = interest, limit
        self.frames: list[tuple[int, bytes]] = []
        self.quiet = True  # nothing handed since the clock's last tick
        self.beat = False  # a heartbeat is due
        self.dropped = False
        self.waiter: asyncio.Future | None = None  # its stream's, while it waits

    def hand(self, event_id: int, text: bytes) -> bool:
        """False when `limit` frames are waiting already: a client that does not read."""
        if len(self.frames) >= self.limit:
            return False
        self.frames.append((event_id, text))
        self.quiet = False
        self.wake()
        return True

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next(self) -> tuple[list[tuple[int, bytes]], bool]:
        """The frames handed since the last call and whether a heartbeat is due, once there is either (or the
        listener was dropped)."""
        while not (self.frames or self.beat or self.dropped):
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        frames, beat = self.frames, self.beat
        self.frames, self.beat = [], False
        return frames, beat


NAMES = {"changes": b"change", "alerts": b"alert", "observations": b"observation"}  # the SSE event type, by topic


def frame(event: Event) -> bytes:
    """The event as Server-Sent Events text."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, NAMES[event.topic], event.json())


class Hub:
    def __init__(self, engine, access: LayerAccess, url: str, queue_size: int):
        self.engine, self.access, self.url, self.queue_size = engine, access, url, queue_size
        self.listeners: dict[Interest, set[Listener]] = {}  # by what they asked for and who they are
        self.position = 0  # the last event id handed out or passed over
        self.closing = False
        self.woken = asyncio.Condition()

    def close(self) -> None:
        """The server is stopping: every stream ends now (its client resumes elsewhere by id), so the server's
        graceful shutdown, which waits for open responses, is not held up by streams that never end."""
        self.closing = True
        for group in list(self.listeners.values()):
            for listener in list(group):
                self._drop(listener)

    def listen(self, interest: Interest) -> Listener:
        listener = Listener(interest, self.queue_size)
        self.listeners.setdefault(interest, set()).add(listener)
        metrics.stream_clients.inc()
        return listener

    def forget(self, listener: Listener) -> None:
        group = self.listeners.get(listener.interest)
        if group is not None and listener in group:
            group.discard(listener)
            if not group:
                del self.listeners[listener.interest]
            metrics.stream_clients.dec()

    def _drop(self, listener: Listener) -> None:
        """Its stream ends at its next turn; what it held is let go."""
        listener.dropped = True
        listener.frames = []
        self.forget(listener)
        listener.wake()

    def _offer(self, event: Event) -> None:
        text = None
        for interest, group in list(self.listeners.items()):
            if not interest.wants(event, self.access):
                continue
            text = text or frame(event)
            behind = [listener for listener in group if not listener.hand(event.id, text)]
            for listener in behind:
                self._drop(listener)
                metrics.stream_dropped.inc()

    async def beating(self, heartbeat_s: float) -> None:
        """A heartbeat due on every listener handed nothing for half of `heartbeat_s`, so no stream is silent for
        longer than `heartbeat_s` (what a proxy's idle timeout must exceed)."""
        while True:
            await asyncio.sleep(heartbeat_s / 2)
            for group in self.listeners.values():
                for listener in group:
                    if listener.quiet:
                        listener.beat = True
                        listener.wake()
                    listener.quiet = True

    def _wants_readings(self) -> bool:
        return any("observations" in interest.topics for interest in self.listeners)

    async def catch_up(self) -> None:
        while True:
            async with self.engine.connect() as conn:
                readings = self._wants_readings()
                # Taken before the changes are read, so all up to it are among them: the position then passes
                # the readings not read too, as the webhooks (due while behind it) and new streams expect.
                last = None if readings else await feed.last_id(conn)
                if not self.listeners:  # nobody to hand them to (a bulk load's million changes are not read)
                    await self._moved(last)
                    return
                events = await feed.read(conn, self.position, PAGE, readings=readings)
            if not readings and self._wants_readings():
                continue  # a listener of readings came meanwhile, at the old position: read again with them
            for event in events:
                self._offer(event)
            position = events[-1].id if events else self.position
            if len(events) < PAGE:
                await self._moved(max(position, last or 0))
                return
            await self._moved(position)

    async def _moved(self, position: int) -> None:
        if position > self.position:
            self.position = position
            async with self.woken:
                self.woken.notify_all()

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
