"""Webhooks: signed deliveries in order; a receiver that was down gets everything afterwards, once each by
event id; a subscription failing for long is paused, its owner sees why and resumes it; private layers and
other departments' subscriptions stay private."""

import httpx
import pytest
from sqlalchemy import text

from tests.events_support import Receiver, SseClient, bearer, events_server
from tests.test_stream import LAYER, last_change, logged_ids, touch
from tests.tile_support import wait_for
from twin.auth import create_key


@pytest.fixture(scope="module")
def keys(engine, loaded):
    with engine.begin() as conn:
        return {"urban": create_key(conn, "城市管理局", [LAYER]),
                "ecology": create_key(conn, "生态环境局", []),
                "admin": create_key(conn, "管理员", [], is_admin=True)}


@pytest.fixture(scope="module")
def base(database_url, data_dir, loaded):
    with events_server(database_url, data_dir, "webhook-server", webhook_retry_s=5) as url:
        yield url


def subscribe(base: str, key: str, url: str, **body) -> dict:
    answer = httpx.post(f"{base}/webhooks", json={"url": url, "topics": ["changes"], "layers": [LAYER], **body},
                        headers=bearer(key))
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_deliveries_are_signed_and_in_order(base, engine, keys):
    receiver = Receiver()
    try:
        start = last_change(engine)
        hook = subscribe(base, keys["urban"], receiver.url)
        receiver.secret = hook["secret"]
        for _ in range(3):
            touch(engine, 4)
        expected = logged_ids(base, start)
        assert wait_for(lambda: len(receiver.event_ids()) >= len(expected), 10)
        assert receiver.event_ids() == expected and receiver.bad_signatures == 0
        event = receiver.deliveries[0]["events"][0]
        assert event["topic"] == "changes" and event["layer"] == LAYER and event["operation"] == "insert"
        log = httpx.get(f"{base}/webhooks/{hook['id']}/deliveries", headers=bearer(keys["urban"])).json()
        assert log["deliveries"] and all(d["status"] == 204 for d in log["deliveries"])
        assert httpx.get(f"{base}/webhooks/{hook['id']}", headers=bearer(keys["ecology"])).status_code == 404
        assert "secret" not in httpx.get(f"{base}/webhooks/{hook['id']}", headers=bearer(keys["urban"])).json()
    finally:
        receiver.close()


def test_a_receiver_that_was_down_gets_everything_afterwards_in_order_once_each(base, engine, keys):
    receiver = Receiver()
    try:
        receiver.up = False
        start = last_change(engine)
        hook = subscribe(base, keys["urban"], receiver.url)
        for _ in range(5):
            touch(engine, 2)

        def failures():
            return httpx.get(f"{base}/webhooks/{hook['id']}", headers=bearer(keys["urban"])).json()["failures"]

        assert wait_for(lambda: failures() >= 2, 10)  # retried, backing off
        receiver.up = True
        expected = logged_ids(base, start)
        assert wait_for(lambda: len(receiver.event_ids()) >= len(expected), 10)
        assert receiver.event_ids() == expected  # in order, each once
        state = httpx.get(f"{base}/webhooks/{hook['id']}", headers=bearer(keys["urban"])).json()
        assert state["state"] == "active" and state["failures"] == 0 and state["cursor"] >= expected[-1]
        statuses = [d["status"] for d in httpx.get(f"{base}/webhooks/{hook['id']}/deliveries",
                                                   headers=bearer(keys["urban"])).json()["deliveries"]]
        assert statuses[0] == 204 and 503 in statuses
    finally:
        receiver.close()


def test_a_subscription_failing_too_long_is_paused_and_its_owner_resumes_it(base, engine, keys):
    receiver = Receiver()
    receiver.up = False
    try:
        start = last_change(engine)
        hook = subscribe(base, keys["urban"], receiver.url)
        touch(engine, 2)

        def state():
            return httpx.get(f"{base}/webhooks/{hook['id']}", headers=bearer(keys["urban"])).json()

        # paused once failing for webhook_retry_s (5 s); the bound leaves room for a loaded machine
        assert wait_for(lambda: state()["state"] == "paused", 60)
        assert "503" in state()["paused_reason"] or "failing" in state()["paused_reason"]
        receiver.up = True
        resumed = httpx.patch(f"{base}/webhooks/{hook['id']}", json={"state": "active"}, headers=bearer(keys["urban"]))
        assert resumed.status_code == 200 and resumed.json()["state"] == "active"
        expected = logged_ids(base, start)
        assert wait_for(lambda: receiver.event_ids() == expected, 10)
    finally:
        receiver.close()


def test_a_subscription_to_readings_is_served_while_the_stream_follows_changes_only(base, engine, keys):
    """With only a client of changes on the stream the hub reads no reading (events/hub.py), yet its position
    passes them: a subscription to `observations` is due at once, not at the next change."""
    with engine.connect() as conn:
        stream = conn.execute(text("SELECT id FROM sensing.datastream WHERE properties ? 'hj212_code' "
                                   "ORDER BY id LIMIT 1")).scalar_one()
    follower, receiver = SseClient(base, {"topics": "changes"}), Receiver()
    hook = None
    try:
        assert wait_for(lambda: follower.heartbeats > 0, 10)
        hook = subscribe(base, keys["admin"], receiver.url, topics=["observations"], layers=None)
        receiver.secret = hook["secret"]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO sensing.observation (datastream_id, phenomenon_time, result) "
                              "VALUES (:stream, now() - interval '5 minutes', 12.5)"), {"stream": stream})
        assert wait_for(lambda: receiver.deliveries, 10), "the reading waited for a change"
        [event] = [e for delivery in receiver.deliveries for e in delivery["events"]]
        assert (event["topic"], event["datastream"]["@iot.id"], event["observation"]["result"]) == \
            ("observations", stream, 12.5)
        assert not [e for e in follower.events if e[1] == "observation"]
    finally:
        follower.close()
        receiver.close()
        if hook is not None:
            httpx.delete(f"{base}/webhooks/{hook['id']}", headers=bearer(keys["admin"]))


def test_a_key_that_may_not_read_a_private_layer_gets_none_of_it(base, engine, keys):
    receiver, owner = Receiver(), Receiver()
    admin = bearer(keys["admin"])
    assert httpx.put(f"{base}/admin/layers/{LAYER}/access", json={"private": True}, headers=admin).status_code == 200
    try:
        subscribe(base, keys["ecology"], receiver.url)
        subscribe(base, keys["urban"], owner.url)
        touch(engine, 3)
        assert wait_for(lambda: len(owner.event_ids()) >= 3, 10)
        assert wait_for(lambda: False, 1.5) is False and receiver.deliveries == []
    finally:
        httpx.put(f"{base}/admin/layers/{LAYER}/access", json={"private": False}, headers=admin)
        receiver.close()
        owner.close()


@pytest.mark.parametrize("body, where", [
    ({"url": "not a url", "topics": ["changes"]}, "body.url"),
    ({"url": "http://127.0.0.1:9/x", "topics": ["gossip"]}, "body.topics"),
    ({"url": "http://127.0.0.1:9/x", "layers": ["nowhere"]}, "body.layers"),
])
def test_a_bad_subscription_is_refused_saying_where(base, keys, body, where):
    answer = httpx.post(f"{base}/webhooks", json=body, headers=bearer(keys["urban"]))
    found = answer.json()["where"]
    found = found if isinstance(found, str) else found[0]["where"]  # the list a validation error gives
    assert answer.status_code == 400 and found.startswith(where), answer.text
