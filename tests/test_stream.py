"""`GET /stream`: every change as an event whose id is its change id; resumption by Last-Event-ID on the same
or a restarted server; private layers kept from those who may not read them; a client that stops reading is
dropped and resumes."""

import re
import socket
import time
import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.events_support import SseClient, bearer, events_server
from tests.tile_support import wait_for
from twin.auth import create_key

LAYER = "city_components"


@pytest.fixture(scope="module")
def keys(engine, loaded):
    with engine.begin() as conn:
        return {"urban": create_key(conn, "城市管理局", [LAYER]),
                "admin": create_key(conn, "管理员", [], is_admin=True)}


@pytest.fixture(scope="module")
def base(database_url, data_dir, loaded):
    with events_server(database_url, data_dir, "stream-server", stream_queue=20) as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def tidy(engine):
    """The components this module adds go afterwards: later modules count the bundle's."""
    yield
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components WHERE code LIKE 'EVT%'"))


def touch(engine, n: int, filler: int = 0) -> None:
    """n new city components, by SQL (every path writes the change log)."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, owner_unit, geom) "
                          "SELECT :prefix || i, '完好', repeat('x', :filler), "
                          "ST_SetSRID(ST_MakePoint(120.4, 31.5), 4490) "
                          "FROM generate_series(1, :n) i"), {"prefix": f"EVT{uuid.uuid4().hex[:8]}-", "n": n,
                                                             "filler": filler})


def logged_ids(base: str, after: int, layer: str = LAYER) -> list[int]:
    answer = httpx.get(f"{base}/changes", params={"after": after, "layer": layer, "limit": 10000}).json()
    return [c["id"] for c in answer["changes"]]


def last_change(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT max(change_id) FROM twin.change")).scalar()


def following(client: SseClient) -> bool:
    return wait_for(lambda: client.heartbeats > 0, 10)  # subscribed: the first heartbeat came after it


def test_each_change_is_an_event_with_its_change_id_and_last_event_id_resumes_exactly(base, engine):
    start = last_change(engine)
    client = SseClient(base, {"layers": LAYER, "topics": "changes"})
    assert following(client) and client.status == 200
    touch(engine, 5)
    assert wait_for(lambda: len(client.events) >= 5, 10)
    client.close()
    assert client.ids() == logged_ids(base, start)
    _, kind, body = client.events[0]
    assert kind == "change"
    assert body["layer"] == LAYER and body["operation"] == "insert" and body["feature"]["geometry"]["type"] == "Point"
    last = client.ids()[-1]
    touch(engine, 7)  # while no one listens
    again = SseClient(base, {"layers": LAYER}, {"Last-Event-ID": str(last)})
    assert wait_for(lambda: len(again.events) >= 7, 10)
    touch(engine, 1)
    assert wait_for(lambda: len(again.events) >= 8, 10)
    again.close()
    assert again.ids() == logged_ids(base, last)


def test_after_a_server_restart_a_client_gets_exactly_the_events_it_missed(database_url, data_dir, engine, loaded):
    with events_server(database_url, data_dir, "stream-restart-1") as first:
        client = SseClient(first, {"layers": LAYER})
        assert following(client)
        touch(engine, 3)
        assert wait_for(lambda: len(client.events) >= 3, 10)
    assert wait_for(client.ended.is_set, 10)  # the server went away
    last = client.ids()[-1]
    touch(engine, 4)  # no server running
    with events_server(database_url, data_dir, "stream-restart-2") as second:
        again = SseClient(second, {"layers": LAYER}, {"Last-Event-ID": str(last)})
        assert wait_for(lambda: len(again.events) >= 4, 10)
        assert following(again)
        again.close()
        assert again.ids() == logged_ids(second, last) and len(again.ids()) == 4


def test_a_private_layer_reaches_only_those_who_may_read_it(base, engine, keys):
    switch = {"Authorization": f"Bearer {keys['admin']}"}
    assert httpx.put(f"{base}/admin/layers/{LAYER}/access", json={"private": True}, headers=switch).status_code == 200
    try:
        anonymous = SseClient(base, {"layers": LAYER})
        owner = SseClient(base, {"layers": LAYER}, bearer(keys["urban"]))
        assert following(anonymous) and following(owner)
        touch(engine, 2)
        assert wait_for(lambda: len(owner.events) >= 2, 10)
        assert wait_for(lambda: anonymous.heartbeats >= 3, 10)  # time for anything that would leak
        assert anonymous.events == []
        anonymous.close()
        owner.close()
        refused = httpx.get(f"{base}/stream", headers=bearer("twin_nope_nope"))
        assert refused.status_code == 401
    finally:
        httpx.put(f"{base}/admin/layers/{LAYER}/access", json={"private": False}, headers=switch)


@pytest.mark.parametrize("params, headers, where", [
    ({"topics": "changes,gossip"}, {}, "query.topics"),
    ({"layers": "no_such_layer"}, {}, "query.layers"),
    ({}, {"Last-Event-ID": "yesterday"}, "header.Last-Event-ID"),
    ({"after": "-1"}, {}, "query.after"),  # left to the route (events.stream_front), whose validation says so
    ({"after": str(2 ** 63)}, {}, "query.after"),
])
def test_bad_stream_requests_say_what_and_where(base, params, headers, where):
    answer = httpx.get(f"{base}/stream", params=params, headers={"Origin": "https://dashboard.example"} | headers)
    found = answer.json()["where"]
    assert answer.status_code == 400 and (found if isinstance(found, str) else found[0]["where"]) == where
    assert answer.headers["access-control-allow-origin"] == "*"  # errors too, in front of the app or behind it


def test_a_stream_for_another_origin_carries_the_cors_headers_and_resumes_from_after(base, engine):
    start = last_change(engine)
    touch(engine, 2)
    client = SseClient(base, {"layers": LAYER, "after": start}, {"Origin": "https://dashboard.example"})
    assert wait_for(lambda: len(client.events) >= 2, 10)
    client.close()
    assert client.ids() == logged_ids(base, start)[:2]
    with httpx.stream("GET", f"{base}/stream", headers={"Origin": "https://dashboard.example"}) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["access-control-allow-origin"] == "*" and answer.headers["cache-control"] == "no-cache"



def test_no_stream_is_silent_longer_than_the_heartbeat(base, engine):
    # QUICK's heartbeat is 1 s. An event just after the heartbeat clock's tick used to leave its stream silent
    # for up to two periods; now the clock ticks every half period. 0.5 s of slack for a loaded machine.
    client = SseClient(base, {"layers": LAYER, "topics": "changes"})
    try:
        assert following(client)
        for _ in range(3):
            touch(engine, 1)
            time.sleep(0.7)
        assert wait_for(lambda: len(client.events) >= 3, 10)
        settled = len(client.heard)
        assert wait_for(lambda: len(client.heard) >= settled + 3, 10)
        heard = client.heard[:]
    finally:
        client.close()
    assert max(b - a for a, b in zip(heard, heard[1:])) <= 1.5

def dropped(base: str) -> float:
    found = re.search(r"^twin_stream_dropped_total (\S+)$", httpx.get(f"{base}/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_client_that_does_not_read_is_dropped_and_resumes(base, engine):
    before, start = dropped(base), last_change(engine)
    host, port = base.removeprefix("http://").split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(f"GET /stream?layers={LAYER} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    for _ in range(6):  # 6 x 60 events of 20 kB: far more than the socket buffers and a queue of 20 hold
        touch(engine, 60, filler=20_000)
    assert wait_for(lambda: dropped(base) > before, 20)
    slow.settimeout(5)
    received = b""
    while not received.endswith(b"0\r\n\r\n"):  # the stream ends once the client reads again
        chunk = slow.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    slow.close()
    ids = [int(i) for i in re.findall(rb"(?:^|\n)id: (\d+)\n", received)]
    expected = logged_ids(base, start)
    assert ids == expected[:len(ids)] and len(ids) < len(expected)
    again = SseClient(base, {"layers": LAYER}, {"Last-Event-ID": str(ids[-1] if ids else start)})
    assert wait_for(lambda: len(again.events) >= len(expected) - len(ids), 20)
    again.close()
    assert ids + again.ids() == expected
