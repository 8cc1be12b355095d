"""A managed mosquitto of the test run's own (on a free port, in the session's data directory), a server that
knows it, `twin ingest mqtt` processes, and paho-mqtt clients logging in with department keys."""

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.server_support import REPO, free_port, logged_server, stop
from tests.sta_support import ECOLOGY, URBAN, bearer
from twin.auth import create_key
from twin.broker import Broker
from twin.settings import get_settings

MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
COUNT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CountObservation"


@pytest.fixture(scope="module")
def broker(database_url, data_dir, engine):
    """The managed broker, up for the module; gone afterwards, so later servers of the session find none."""
    os.environ["TWIN_MQTT_PORT"] = str(free_port())
    get_settings.cache_clear()
    managed = Broker.of(get_settings())
    with engine.begin() as conn:
        managed.up(conn)
    try:
        yield managed
    finally:
        managed.down()
        shutil.rmtree(managed.directory, ignore_errors=True)
        del os.environ["TWIN_MQTT_PORT"]
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def keys(broker, engine) -> dict[str, str]:
    """Keys made with the broker up (so they have broker credentials): two departments, and an admin."""
    with engine.begin() as conn:
        return {"ecology": create_key(conn, ECOLOGY, ["water_quality"]),
                "urban": create_key(conn, URBAN, ["city_components"]),
                "admin": create_key(conn, "信息中心", [], True)}


@pytest.fixture(scope="module")
def mqtt_server(broker, database_url, data_dir):
    """The real app knowing the broker (it publishes what it stores), ingesting nothing itself."""
    with logged_server(database_url, data_dir, data_dir / "mqtt-server.log", mqtt_ingest="false") as base:
        yield base


@pytest.fixture(scope="module")
def streams(broker, mqtt_server, keys) -> dict[str, int]:
    """Datastreams made over /sta/v1.1: two of 生态环境局 (a measurement and a count), one of 城管局."""
    made, run = {}, secrets.token_hex(4)  # names and definitions are unique: each module makes its own
    with httpx.Client(base_url=mqtt_server, timeout=30) as http:
        for name, department, kind in (("ecology", "ecology", MEASUREMENT), ("ecology_count", "ecology", COUNT),
                                       ("urban", "urban", MEASUREMENT)):
            body = {"name": f"mqtt test {name}", "description": "MQTT tests' Thing",
                    "Datastreams": [{"name": f"{name} stream", "description": name, "observationType": kind,
                                     "unitOfMeasurement": {"name": "mg/L", "symbol": "mg/L",
                                                           "definition": "http://unitsofmeasure.org"},
                                     "Sensor": {"name": f"sensor {name} {run}", "description": "", "encodingType":
                                                "text/html", "metadata": ""},
                                     "ObservedProperty": {"name": f"mqtt {name}", "description": "",
                                                          "definition": f"urn:test:mqtt:{name}:{run}"}}]}
            created = http.post("/sta/v1.1/Things", json=body, headers=bearer(keys[department]))
            assert created.status_code == 201, created.text
            found = http.get(f"{created.headers['Location']}/Datastreams").json()["value"]
            made[name] = found[0]["@iot.id"]
    wait_for_acl(broker, [f"Datastreams({key})" for key in made.values()])
    return made


def wait_for_acl(broker: Broker, needles: list[str], timeout: float = 10) -> None:
    """The server rewrites the ACL when Datastreams come (channel twin_broker); wait until it has."""
    deadline = time.monotonic() + timeout
    acl = broker.directory / "acl"
    while not all(n in acl.read_text() for n in needles):
        assert time.monotonic() < deadline, f"the broker's ACL lacks {needles}"
        time.sleep(0.05)


@contextmanager
def ingest_process(data_dir: Path, log_name: str = "mqtt-ingest.log", **settings: str):
    """`twin ingest mqtt` as a process of its own, with its metrics on a port; yields (process, metrics URL)."""
    port = free_port()
    env = os.environ | {f"TWIN_{k.upper()}": str(v) for k, v in settings.items()}
    with open(data_dir / log_name, "ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", "twin.cli", "ingest", "mqtt", "--metrics-port", str(port)],
                                   cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while not _answers(metrics):
            assert process.poll() is None and time.monotonic() < deadline, \
                (data_dir / log_name).read_text(errors="replace")[-2000:]
            time.sleep(0.1)
        yield process, metrics
    finally:
        if process.poll() is None:
            stop(process)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def counter(metrics: str, outcome: str, name: str = "twin_mqtt_messages_total") -> float:
    for line in httpx.get(metrics, timeout=5).text.splitlines():
        if line.startswith(f'{name}{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Device:
    """A paho-mqtt MQTT 5 client logged in with a department key (username: its prefix); records what it gets."""

    def __init__(self, broker: Broker, key: str | None, client_id: str = "", password: str | None = None):
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if key is not None:
            self.client.username_pw_set(key.split("_")[1], password if password is not None else key)
        self.received: list[paho.MQTTMessage] = []
        self.acks: dict[int, object] = {}
        self.connack = threading.Event()
        self.reason = None
        self.disconnected = threading.Event()
        self.client.on_connect = self._connected
        self.client.on_message = lambda c, u, message: self.received.append(message)
        self.client.on_publish = lambda c, u, mid, reason, properties: self.acks.__setitem__(mid, reason)
        self.client.on_disconnect = self._disconnected
        self.client.on_subscribe = lambda c, u, mid, reasons, properties: self.acks.__setitem__(mid, reasons)
        self.port = broker.status().port

    def _connected(self, client, userdata, flags, reason, properties):
        self.reason = reason
        self.connack.set()

    def _disconnected(self, client, userdata, flags, reason, properties):
        self.disconnected.set()

    def connect(self) -> "Device":
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.connack.wait(10), "no CONNACK"
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> int:
        return self.client.publish(topic, payload, qos=qos).mid

    def acked(self, mid: int, timeout: float = 10):
        """The PUBACK's (or SUBACK's) reason for `mid`."""
        deadline = time.monotonic() + timeout
        while mid not in self.acks:
            assert time.monotonic() < deadline, f"no acknowledgement of message {mid}"
            time.sleep(0.01)
        return self.acks[mid]

    def subscribe(self, topic: str) -> list:
        result, mid = self.client.subscribe(topic, qos=1)
        return self.acked(mid)


@contextmanager
def device(broker: Broker, key: str | None, **options):
    connected = Device(broker, key, **options).connect()
    try:
        yield connected
    finally:
        connected.close()


def wait_for(condition, timeout: float = 15, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(step)
