"""The HJ 212-2017 TCP listener: devices connect, keep the connection open and send frame after frame.

Each good packet goes to the sink, which stores it and returns only after commit; only then, and only
if the packet's Flag asks for one, the 9014 data response goes back. Frames of one connection are
handled one after another, so a response never overtakes the storing of its packet.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from sensing.hj212 import HEADER_LENGTH, TRAILER_LENGTH, Hj212Refusal, Packet, data_response, parse_frame
from twin import metrics

log = logging.getLogger("twin.hj212")

Sink = Callable[[Packet], Awaitable[None]]

DEFAULT_PORT = 9212
DEFAULT_HOST = "127.0.0.1"
FRAME_DEADLINE_S = 15.0
IDLE_TIMEOUT_S = 900.0
MAX_CONNECTIONS = 1000
LOG_INTERVAL_S = 10.0
READ_SIZE = 4096
START = b"##"
END = b"\r\n"


class ConnectionCut(Exception):
    def __init__(self, counter: str, reason: str):
        super().__init__(reason)
        self.counter = counter
        self.reason = reason


class RefusalLog:
    """One log line per refusal code per interval; the next line says how many were left out meanwhile."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.last: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()

    def warn(self, code: str, message: str, *, exc_info: bool = False, **fields) -> None:
        now = time.monotonic()
        if code in self.last and now - self.last[code] < self.interval_s:
            self.suppressed[code] += 1
            return
        self.last[code] = now
        left_out = self.suppressed.pop(code, 0)
        if left_out:
            message += f" ({left_out} more {code} not logged in the last {self.interval_s:g} s)"
        log.warning(message, exc_info=exc_info, extra={"fields": {"code": code, **fields}})


class Hj212Listener:
    """`counters`: accepted, refused.<code>, skipped_bytes, responses_sent, connections_opened,
    connections_open, connections_rejected, cut.frame_deadline, cut.idle, store_failed."""

    def __init__(self, host: str, port: int, sink: Sink, *, frame_deadline_s: float = FRAME_DEADLINE_S,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                 log_interval_s: float = LOG_INTERVAL_S):
        if frame_deadline_s <= 0 or idle_timeout_s <= 0 or max_connections < 1:
            raise ValueError("frame_deadline_s and idle_timeout_s must be positive, max_connections at least 1")
        self.host = host
        self.port = port
        self.sink = sink
        self.frame_deadline_s = frame_deadline_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.counters: Counter[str] = Counter()
        self.refusals = RefusalLog(log_interval_s)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._closing = False

    @property
    def bound_port(self) -> int:
        """The port listened on (useful when `port` was 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the HJ 212 listener is not started")
        return self._server.sockets[0].getsockname()[1]

    def _count(self, event: str, n: int) -> None:
        self.counters[event] += n
        metrics.hj212_events.labels(event).inc(n)

    def _open(self, change: int) -> None:
        self.counters["connections_open"] += change
        metrics.hj212_connections.inc(change)

    async def start(self) -> None:
        self._closing = False
        self._server = await asyncio.start_server(self._connection, self.host, self.port, reuse_port=True)
        log.info("HJ 212 listener on %s:%d", self.host, self.bound_port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, close every connection, and let a packet being stored finish (up to `grace_s`)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections.values()):
            writer.transport.abort()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._closing or len(self._connections) >= self.max_connections:
            self._count("connections_rejected", 1)
            self.refusals.warn("too_many_connections", f"HJ 212 connection from {peer} refused: "
                               f"{self.max_connections} connections are open", peer=peer)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self._connections[task] = writer
        self._count("connections_opened", 1)
        self._open(+1)
        try:
            await self._frames(reader, writer, peer)
        except ConnectionCut as cut:
            self._count(cut.counter, 1)
            self.refusals.warn(cut.counter, f"HJ 212 connection from {peer} closed: {cut.reason}", peer=peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open(-1)
            del self._connections[task]
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a peer that does not read its responses gets no more time
            else:
                writer.close()

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        deadline = None  # set by the first byte after the previous frame
        while not self._closing:
            data = await self._read(reader, deadline, loop)
            if not data:
                return
            if deadline is None:
                deadline = loop.time() + self.frame_deadline_s
            buffer += data
            while (found := self._next_frame(buffer, peer)) is not None:
                if found:
                    await self._handle(found, writer, peer)
                deadline = loop.time() + self.frame_deadline_s if buffer else None

    async def _read(self, reader: asyncio.StreamReader, deadline: float | None, loop) -> bytes:
        if deadline is None:
            timeout, cut = self.idle_timeout_s, ConnectionCut("cut.idle", f"nothing sent for {self.idle_timeout_s:g} s")
        else:
            timeout = deadline - loop.time()
            cut = ConnectionCut("cut.frame_deadline", f"no complete frame within {self.frame_deadline_s:g} s")
        if timeout <= 0:
            raise cut
        try:
            return await asyncio.wait_for(reader.read(READ_SIZE), timeout)
        except TimeoutError:
            raise cut from None

    def _next_frame(self, buffer: bytearray, peer: str) -> bytes | None:
        """Take the next frame off `buffer`: the frame, b"" for a refused one, None when more bytes are needed.
        Bytes that cannot start a frame are skipped and counted."""
        while True:
            start = buffer.find(START)
            if start < 0:
                keep = 1 if buffer.endswith(b"#") else 0
                self._skip(buffer, len(buffer) - keep, peer)
                return None
            self._skip(buffer, start, peer)
            if len(buffer) < HEADER_LENGTH:
                return None
            if bytes(buffer[2:HEADER_LENGTH]).isdigit():
                break
            self._skip(buffer, 1, peer)  # one byte only: "###0101…" still holds a frame
        declared = int(buffer[2:HEADER_LENGTH])
        end = HEADER_LENGTH + declared + TRAILER_LENGTH
        early_end = buffer.find(END, HEADER_LENGTH, end - len(END))
        if early_end >= 0:
            self._refuse("wrong_length", f"length field says {declared} bytes, the frame ends after "
                         f"{max(early_end - HEADER_LENGTH - 4, 0)}", peer)
            _drop_refused(buffer, early_end + len(END))
            return b""
        if len(buffer) < end:
            return None
        if not buffer.startswith(END, end - len(END)):
            self._refuse("wrong_length", f"length field says {declared} bytes, no CRC and '\\r\\n' follow them", peer)
            _drop_refused(buffer, end)
            return b""
        found = bytes(buffer[:end])
        del buffer[:end]
        return found

    def _skip(self, buffer: bytearray, count: int, peer: str) -> None:
        if count > 0:
            self._count("skipped_bytes", count)
            self.refusals.warn("skipped_bytes", f"HJ 212 connection from {peer}: skipped {count} bytes that are "
                               f"not a frame ({bytes(buffer[:min(count, 32)])!r}…)", peer=peer)
            del buffer[:count]

    async def _handle(self, data: bytes, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            packet = parse_frame(data)
            await self.sink(packet)
        except Hj212Refusal as refusal:
            self._refuse(refusal.code, refusal.reason, peer)
            return
        except Exception as error:
            self._count("store_failed", 1)
            self.refusals.warn("store_failed", f"HJ 212 packet from {peer} not stored: {error!r}", peer=peer,
                               exc_info=True)
            return
        self._count("accepted", 1)
        if packet.response_asked and not self._closing:
            self._count("responses_sent", 1)
            writer.write(data_response(packet))
            try:
                await asyncio.wait_for(writer.drain(), self.frame_deadline_s)
            except TimeoutError:
                raise ConnectionCut("cut.frame_deadline", "the device did not read the data response") from None

    def _refuse(self, code: str, reason: str, peer: str) -> None:
        self._count(f"refused.{code}", 1)
        self.refusals.warn(code, f"HJ 212 packet from {peer} refused ({code}): {reason}", peer=peer, reason=reason)


def _drop_refused(buffer: bytearray, cut: int) -> None:
    """Drop a refused frame up to `cut`, unless another `##` starts before: that may be the next frame."""
    restart = buffer.find(START, len(START), cut)
    del buffer[:restart if restart >= 0 else cut]


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
