"""The managed mosquitto: started by the project, users and ACLs from department keys, a revoked key cut off,
and its limits (docs/mqtt.md)."""

import subprocess
import sys


from tests.broker_support import broker, device, keys, mqtt_server, streams  # noqa: F401 (fixtures)
from tests.server_support import REPO
from twin.auth import revoke_key
from twin.broker import SERVICE_USER, password_hash


def reason(value) -> str:
    return str(value[0] if isinstance(value, list) else value)


def test_the_broker_runs_on_loopback_as_the_url_says_and_stores_no_secret(broker, keys):
    state = broker.status()
    assert state.running and state.pid
    url = subprocess.run([sys.executable, "-m", "twin.cli", "broker", "url"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert url == f"mqtt://127.0.0.1:{state.port}"
    passwords = (broker.directory / "passwords").read_text()
    for key in keys.values():
        prefix, secret = key.split("_", 2)[1:]
        assert f"\n{prefix}:$7$101$" in passwords and secret not in passwords
    assert passwords.startswith(f"{SERVICE_USER}:$7$")
    assert oct((broker.directory / "passwords").stat().st_mode & 0o777) == "0o600"


def test_the_password_hash_is_mosquittos_own(tmp_path):
    import base64
    import hashlib

    hashed = password_hash("twin_abcd_secret", salt=b"0123456789ab")
    _, kind, rounds, salt, digest = hashed.split("$")
    assert (kind, rounds) == ("7", "101")
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"twin_abcd_secret", b"0123456789ab", 101)
    made = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(made), "u", "pw"], check=True, capture_output=True)
    theirs = made.read_text().strip().split(":", 1)[1].split("$")
    assert theirs[1:3] == ["7", "101"] and len(base64.b64decode(theirs[3])) == 12


def test_no_key_or_a_wrong_password_is_refused(broker, keys):
    with device(broker, None) as anonymous:
        assert anonymous.reason.is_failure
    with device(broker, keys["ecology"], password="twin_nope_nope") as wrong:
        assert wrong.reason.is_failure and "authorized" in str(wrong.reason).lower()


def test_a_key_publishes_to_its_departments_datastreams_only(broker, keys, streams):
    with device(broker, keys["ecology"]) as ecology:
        assert not ecology.reason.is_failure
        own = ecology.publish(f"v1.1/Datastreams({streams['ecology']})/Observations", b'{"result": 1}')
        other = ecology.publish(f"v1.1/Datastreams({streams['urban']})/Observations", b'{"result": 1}')
        elsewhere = ecology.publish("v1.1/Things(1)/Locations", b"{}")
        assert not ecology.acked(own).is_failure
        assert reason(ecology.acked(other)) == "Not authorized"
        assert reason(ecology.acked(elsewhere)) == "Not authorized"


def test_a_key_that_may_read_every_datastream_still_may_not_publish_as_another(broker, keys, streams):
    with device(broker, keys["urban"]) as urban:
        mid = urban.publish(f"v1.1/Datastreams({streams['ecology']})/Observations", b'{"result": 1}')
        assert reason(urban.acked(mid)) == "Not authorized"


def test_a_revoked_key_is_cut_off_at_once(broker, engine, streams):
    from tests.sta_support import ECOLOGY
    from twin.auth import create_key

    with engine.begin() as conn:
        key = create_key(conn, ECOLOGY, [])
    with device(broker, key) as doomed:
        assert not doomed.reason.is_failure
        with engine.begin() as conn:
            assert revoke_key(conn, key.split("_")[1])
        assert doomed.disconnected.wait(10), "a revoked key's connection stayed up"
    with device(broker, key) as again:
        assert again.reason.is_failure


def test_an_oversized_packet_disconnects_its_sender(broker, keys, streams):
    with device(broker, keys["ecology"]) as ecology:
        mid = ecology.publish(f"v1.1/Datastreams({streams['ecology']})/Observations", b"x" * 16_400)
        assert ecology.disconnected.wait(10)
        assert mid not in ecology.acks


def test_twin_serve_ingests_when_a_broker_is_there(broker, keys, streams, database_url, data_dir):
    import httpx
    import orjson

    from tests.broker_support import wait_for
    from tests.server_support import logged_server

    moment = "2026-06-01T00:00:00Z"
    with logged_server(database_url, data_dir, data_dir / "mqtt-serve.log") as base, \
            device(broker, keys["ecology"]) as ecology:
        mid = ecology.publish(f"v1.1/Datastreams({streams['ecology']})/Observations",
                              orjson.dumps({"phenomenonTime": moment, "result": 12.5}))
        assert not ecology.acked(mid).is_failure

        def found():
            return httpx.get(f"{base}/sta/v1.1/Datastreams({streams['ecology']})/Observations",
                             params={"$filter": f"phenomenonTime eq {moment}"}).json()["value"]
        assert [o["result"] for o in wait_for(found, timeout=20)] == [12.5]
