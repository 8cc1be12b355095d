"""The HJ 212 listener on a loopback port, driven by raw sockets the way a field device drives it.

The listener runs in its own event loop thread; the sink is an in-memory store that appends a packet
after an await and raises UnknownDevice/UnknownFactor as the real store does. Tests wait for
conditions instead of sleeping, and the deadlines they check are far from the times they measure.
"""

import asyncio
import logging
import select
import socket
import threading
import time
from datetime import datetime

import pytest

from sensing.hj212 import CHINA, UnknownDevice, UnknownFactor, frame, unframe
from sensing.hj212_listener import Hj212Listener

MN = "010000A8900016F000169DC0"
FACTORS = {"w01018", "w21003"}
WAIT_S = 20


def segment(n: int, *, flag: int = 5, mn: str = MN, factor: str = "w01018") -> str:
    now = datetime.now(CHINA)
    return (f"QN={now:%Y%m%d%H%M%S}{n % 1000:03d};ST=32;CN=2011;PW=123456;MN={mn};Flag={flag};"
            f"CP=&&DataTime={now:%Y%m%d%H%M%S};{factor}-Rtd={n}.5,{factor}-Flag=N;w21003-Rtd=1.2,w21003-Flag=N&&")


def wrong_crc(framed: bytes) -> bytes:
    """The frame with a CRC that is never its true one (a fixed 0000 once was: the segments carry the time)."""
    return framed[:-6] + b"%04X\r\n" % (int(framed[-6:-2], 16) ^ 0x5A5A)


def qn_of(data: bytes | str) -> str:
    text = unframe(data) if isinstance(data, bytes) else data
    return text.split(";", 1)[0].removeprefix("QN=")


class MemoryStore:
    """The sink: stores a packet (after an await, as a database would) or refuses it as the real store does."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.packets = []
        self.failing_mn = None

    async def __call__(self, packet) -> None:
        await asyncio.sleep(self.delay_s)
        if packet.mn == self.failing_mn:
            raise RuntimeError("the database is gone")
        if not packet.mn.startswith(MN[:8]):
            raise UnknownDevice(packet.mn)
        for reading in packet.readings:
            if reading.factor not in FACTORS:
                raise UnknownFactor(packet.mn, reading.factor)
        self.packets.append(packet)

    def qns(self) -> list[str]:
        return [packet.qn for packet in list(self.packets)]


class EventLoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT_S)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


@pytest.fixture
def loop():
    running = EventLoopThread()
    yield running
    running.close()


@pytest.fixture
def listen(loop):
    """listen(store, **options) -> a started listener on a free loopback port."""
    started = []

    def start(store: MemoryStore, **options) -> Hj212Listener:
        listener = Hj212Listener("127.0.0.1", 0, store, **options)
        loop.run(listener.start())
        started.append(listener)
        return listener

    yield start
    for listener in started:
        loop.run(listener.stop())


def connect(listener: Hj212Listener) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listener.bound_port), timeout=WAIT_S)


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        assert chunk, f"the listener closed the connection after {data!r}"
        data += chunk
    frames = [part + b"\r\n" for part in data.split(b"\r\n")[:-1]]
    assert len(frames) == count, frames
    return frames


def closed_by_listener(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def wait_until(condition, what: str) -> None:
    give_up = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.02)


def refusal_logs(caplog, code: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "twin.hj212" and getattr(r, "fields", {}).get("code") == code]


def test_several_packets_on_one_connection_are_stored_then_answered(listen):
    store = MemoryStore()
    listener = listen(store)
    sent = [segment(n) for n in range(5)]
    with connect(listener) as sock:
        sock.sendall(b"".join(frame(s) for s in sent[:3]))
        responses = read_frames(sock, 3)
        for each in sent[3:]:
            sock.sendall(frame(each))
            responses += read_frames(sock, 1)
    assert [qn_of(r) for r in responses] == [qn_of(s) for s in sent] == store.qns()
    for response in responses:
        assert ";ST=91;CN=9014;PW=123456;" in unframe(response) and unframe(response).endswith("Flag=4;CP=&&&&")
    assert listener.counters["accepted"] == listener.counters["responses_sent"] == 5


def test_a_packet_with_flag_4_is_stored_without_a_response(listen):
    store = MemoryStore()
    listener = listen(store)
    quiet, asking = segment(1, flag=4), segment(2, flag=5)
    with connect(listener) as sock:
        sock.sendall(frame(quiet) + frame(asking))
        assert [qn_of(r) for r in read_frames(sock, 1)] == [qn_of(asking)]
    assert store.qns() == [qn_of(quiet), qn_of(asking)]
    assert listener.counters["accepted"] == 2 and listener.counters["responses_sent"] == 1


def test_bad_crc_wrong_length_and_garbage_between_frames_are_refused(listen, caplog):
    caplog.set_level(logging.WARNING, logger="twin.hj212")
    store = MemoryStore()
    listener = listen(store)
    good, bad_crc, too_long, too_short, after = (segment(n) for n in range(1, 6))
    garbage = b"\x00\xff\r\nAT+CSQ\r\n#x##ab"
    bad_crc_frame = wrong_crc(frame(bad_crc))
    too_long_frame = b"##%04d" % (len(too_long) + 7) + frame(too_long)[6:]
    too_short_frame = b"##%04d" % (len(too_short) - 7) + frame(too_short)[6:]
    with connect(listener) as sock:
        sock.sendall(frame(good) + garbage + bad_crc_frame + too_long_frame + garbage + too_short_frame)
        sock.sendall(b"###" + frame(after))
        assert [qn_of(r) for r in read_frames(sock, 2)] == [qn_of(good), qn_of(after)]
    assert store.qns() == [qn_of(good), qn_of(after)]
    assert listener.counters["refused.bad_crc"] == 1
    assert listener.counters["refused.wrong_length"] == 2
    assert listener.counters["skipped_bytes"] >= 2 * len(garbage)
    assert "does not match" in refusal_logs(caplog, "bad_crc")[0].getMessage()
    assert "length field says" in refusal_logs(caplog, "wrong_length")[0].getMessage()


def test_an_unknown_device_or_factor_is_refused_and_not_stored(listen, caplog):
    caplog.set_level(logging.WARNING, logger="twin.hj212")
    store = MemoryStore()
    listener = listen(store)
    unknown_device = segment(1, mn="99999999XW0001")
    unknown_factor = segment(2, factor="w99999")
    known = segment(3)
    with connect(listener) as sock:
        sock.sendall(frame(unknown_device) + frame(unknown_factor) + frame(known))
        assert [qn_of(r) for r in read_frames(sock, 1)] == [qn_of(known)]
    assert store.qns() == [qn_of(known)]
    assert listener.counters["refused.unknown_device"] == listener.counters["refused.unknown_factor"] == 1
    assert "99999999XW0001" in refusal_logs(caplog, "unknown_device")[0].getMessage()
    assert "w99999" in refusal_logs(caplog, "unknown_factor")[0].getMessage()


def test_a_store_failure_is_not_answered_and_the_connection_goes_on(listen):
    store = MemoryStore()
    store.failing_mn = MN[:8] + "FAILING"
    listener = listen(store)
    good = segment(2)
    with connect(listener) as sock:
        sock.sendall(frame(segment(1, mn=store.failing_mn)) + frame(good))
        assert [qn_of(r) for r in read_frames(sock, 1)] == [qn_of(good)]
    assert listener.counters["store_failed"] == 1 and len(store.packets) == 1


def test_a_half_frame_then_silence_is_cut_at_the_deadline(listen):
    store = MemoryStore()
    listener = listen(store, frame_deadline_s=1.0)
    whole = frame(segment(1))
    with connect(listener) as sock:
        sock.sendall(whole[:len(whole) // 2])
        assert closed_by_listener(sock)
    wait_until(lambda: listener.counters["cut.frame_deadline"] == 1, "the cut to be counted")
    wait_until(lambda: listener.counters["connections_open"] == 0, "the connection to be forgotten")
    assert store.packets == []


def test_a_sender_trickling_a_byte_every_200_ms_is_cut(listen):
    store = MemoryStore()
    listener = listen(store, frame_deadline_s=1.0)
    whole = frame(segment(1))  # about 170 bytes: 34 s at this pace
    sent = 0
    with connect(listener) as sock:
        for byte in whole:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if select.select([sock], [], [], 0.2)[0]:
                assert closed_by_listener(sock)
                break
    assert sent < len(whole)
    wait_until(lambda: listener.counters["cut.frame_deadline"] == 1, "the cut to be counted")
    assert store.packets == []


def test_garbage_alone_is_cut_at_the_frame_deadline(listen):
    listener = listen(MemoryStore(), frame_deadline_s=1.0)
    with connect(listener) as sock:
        for _ in range(200):
            try:
                sock.sendall(b"garbage without a frame start ")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.1)[0]:
                assert closed_by_listener(sock)
                break
        else:
            pytest.fail("a sender of garbage kept its connection for 20 s")
    assert listener.counters["cut.frame_deadline"] == 1


def test_a_silent_connection_is_closed_after_the_idle_timeout(listen):
    listener = listen(MemoryStore(), idle_timeout_s=1.0)
    with connect(listener) as sock:
        sock.sendall(frame(segment(1)))
        read_frames(sock, 1)
        assert closed_by_listener(sock)
    wait_until(lambda: listener.counters["cut.idle"] == 1, "the idle cut to be counted")


def test_a_slow_store_does_not_let_responses_overtake_storage(listen):
    store = MemoryStore(delay_s=0.3)
    listener = listen(store)
    sent = [segment(n) for n in range(4)]
    stored_when_answered = []
    with connect(listener) as sock:
        sock.sendall(b"".join(frame(s) for s in sent))
        for _ in sent:
            response = read_frames(sock, 1)[0]
            stored_when_answered.append(qn_of(response) in store.qns())
    assert stored_when_answered == [True] * len(sent)
    assert store.qns() == [qn_of(s) for s in sent]
    assert listener.counters["accepted"] == 4


def test_many_connections_at_once(listen):
    store = MemoryStore(delay_s=0.01)
    listener = listen(store)
    socks = [connect(listener) for _ in range(60)]
    try:
        for n, sock in enumerate(socks):
            device = f"{MN[:8]}{n:04d}"
            sock.sendall(frame(segment(2 * n, mn=device)) + frame(segment(2 * n + 1, mn=device)))
        for n, sock in enumerate(socks):
            assert [unframe(r).split("MN=")[1][:12] for r in read_frames(sock, 2)] == [f"{MN[:8]}{n:04d}"] * 2
        assert listener.counters["connections_open"] == 60
    finally:
        for sock in socks:
            sock.close()
    assert len(store.packets) == 120 and listener.counters["accepted"] == 120
    wait_until(lambda: listener.counters["connections_open"] == 0, "every connection to be closed")


def test_connections_past_the_limit_are_refused(listen):
    listener = listen(MemoryStore(), max_connections=2)
    first, second = connect(listener), connect(listener)
    try:
        for n, sock in enumerate((first, second)):
            sock.sendall(frame(segment(n)))
            read_frames(sock, 1)
        with connect(listener) as third:
            assert closed_by_listener(third)
        assert listener.counters["connections_rejected"] == 1
        first.close()
        wait_until(lambda: listener.counters["connections_open"] == 1, "the first connection to be closed")
        with connect(listener) as fourth:
            fourth.sendall(frame(last := segment(4)))
            assert qn_of(read_frames(fourth, 1)[0]) == qn_of(last)
    finally:
        first.close()
        second.close()


def test_a_flood_of_refusals_logs_one_line_per_interval(listen, caplog):
    caplog.set_level(logging.WARNING, logger="twin.hj212")
    listener = listen(MemoryStore(), log_interval_s=60)
    bad = wrong_crc(frame(segment(1)))
    with connect(listener) as sock:
        sock.sendall(bad * 500 + b"noise" * 1000 + frame(segment(2)))
        read_frames(sock, 1)
    assert listener.counters["refused.bad_crc"] == 500
    assert len(refusal_logs(caplog, "bad_crc")) == 1
    assert len(refusal_logs(caplog, "skipped_bytes")) == 1


def test_stop_closes_connections_and_the_port(loop, listen):
    listener = listen(MemoryStore())
    port = listener.bound_port
    with connect(listener) as sock:
        sock.sendall(frame(segment(1)))
        read_frames(sock, 1)
        loop.run(listener.stop())
        assert closed_by_listener(sock)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def test_the_listener_refuses_nonsense_settings():
    with pytest.raises(ValueError):
        Hj212Listener("127.0.0.1", 0, MemoryStore(), frame_deadline_s=0)
    with pytest.raises(ValueError):
        Hj212Listener("127.0.0.1", 0, MemoryStore(), max_connections=0)
