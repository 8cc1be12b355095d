"""MQTT for the observation store: the SensorThings topics, clients of the configured broker, and the
publication of every stored observation to `v1.1/Datastreams(<id>)/Observations` (docs/mqtt.md).

`publisher(settings)` is the one way to get a connected client for publishing (the events room's alerts use
it too): a paho-mqtt 2 client speaking MQTT 5 as the server's service account, its network loop running in a
thread of its own and reconnecting by itself; `publish` never blocks, and while the broker is away QoS 1
messages wait in the client (up to HELD) and the rest are dropped and counted, so no write ever fails for it.
"""

import logging
import re
import secrets
import socket
from datetime import datetime

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sensing import store
from sensing.sta.query import iso
from twin.broker import endpoint, service_url
from twin.metrics import mqtt_published
from twin.settings import Settings

log = logging.getLogger("sensing.mqtt")
OBSERVATIONS = re.compile(r"v1\.1/Datastreams\((\d{1,18})\)/Observations")
HELD = 10_000  # QoS 1 messages a publisher keeps while the broker is away


def observations_topic(datastream_id: int) -> str:
    return f"v1.1/Datastreams({datastream_id})/Observations"


def client(settings: Settings, client_id: str = "", *, manual_ack: bool = False, session: bool | None = None
           ) -> paho.Client:
    """An MQTT client of the configured broker as the service account, not yet connected (see `connect`): MQTT 5,
    or MQTT 3.1.1 when `session` is given (a persistent session or not), whose packets paho decodes at about a
    quarter of the cost (it makes an MQTT 5 properties object for every message received)."""
    url = service_url(settings)
    if url is None:
        raise LookupError("no MQTT broker: set TWIN_MQTT_URL or start the managed one (twin broker up)")
    _, _, username, password = endpoint(url)
    if session is None:
        mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                           manual_ack=manual_ack)
    else:
        mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                           clean_session=not session, manual_ack=manual_ack)
    if username:
        mqtt.username_pw_set(username, password)
    mqtt.reconnect_delay_set(0.2, 5)
    return mqtt


def connect(mqtt: paho.Client, settings: Settings, *, wait: bool = True, loop: bool = True) -> None:
    """Connect (`wait`: now, raising if the broker cannot be reached; else in the background) and start the
    network loop, which reconnects by itself (`loop` False: the caller runs it, see sensing.mqtt_loop)."""
    host, port, _, _ = endpoint(service_url(settings))
    if wait:
        mqtt.connect(host, port, keepalive=30)
    else:
        mqtt.connect_async(host, port, keepalive=30)
    if loop:
        mqtt.loop_start()


def publisher(settings: Settings) -> paho.Client | None:
    """A client for publishing (see the module's text), or None when no broker is configured. Stop it with
    `client.disconnect(); client.loop_stop()`."""
    if service_url(settings) is None:
        return None
    mqtt = client(settings, f"twin-publisher-{socket.gethostname()}-{secrets.token_hex(6)}")
    mqtt.max_queued_messages_set(HELD)
    connect(mqtt, settings, wait=False)
    return mqtt


def observation_json(base: str, row: store.ObservationRow, key: int) -> bytes:
    """The stored observation as the SensorThings API serves it (`base`: the server's /sta/v1.1 URL)."""
    time = iso(row.phenomenon_time)
    if row.phenomenon_time_end is not None:
        time = f"{time}/{iso(row.phenomenon_time_end)}"
    result_time = row.result_time if row.result_time is not None else (
        row.phenomenon_time if key < 0 else None)  # a water-quality reading's resultTime is its time
    return orjson.dumps({
        "@iot.id": key, "@iot.selfLink": f"{base}/Observations({key})", "phenomenonTime": time,
        "resultTime": iso(result_time) if isinstance(result_time, datetime) else None, "result": row.result,
        "resultQuality": row.result_quality,
        "Datastream@iot.navigationLink": f"{base}/Observations({key})/Datastream",
        "FeatureOfInterest@iot.navigationLink": f"{base}/Observations({key})/FeatureOfInterest"})


def sta_base(settings: Settings) -> str:
    """The server's /sta/v1.1 URL, as published observations link to it."""
    return f"{(settings.public_url or f'http://{settings.host}:{settings.port}').rstrip('/')}/sta/v1.1"


def publish_stored(mqtt: paho.Client, base: str, rows: list[store.ObservationRow], ids: list[int]) -> None:
    """Publish stored observations to their Datastreams' topics at QoS 0: a notification (the store, /sta/v1.1
    and the SSE stream are the record). At QoS 1 paho handled each PUBACK by walking every message in flight,
    and each went back to the ingest to be acknowledged again. Their `@iot.id` tells them from devices' messages
    (docs/mqtt.md); an MQTT 5 user property saying the same cost paho more than the rest of the publication.
    While the broker is away they are dropped and counted."""
    sent = 0
    for row, key in zip(rows, ids):
        info = mqtt.publish(observations_topic(row.datastream_id), observation_json(base, row, key), qos=0)
        sent += info.rc == paho.MQTT_ERR_SUCCESS
    mqtt_published.labels("sent").inc(sent)
    if sent < len(rows):
        mqtt_published.labels("dropped").inc(len(rows) - sent)
        log.warning("the MQTT broker is away: %d stored observations not published", len(rows) - sent)


def publishing(mqtt: paho.Client, settings: Settings):
    """Publish every observation this process stores (sensing.store.on_stored) with `publish_stored`; returns
    the function that stops it."""
    base = sta_base(settings)
    return store.on_stored(lambda rows, ids: publish_stored(mqtt, base, rows, ids))
