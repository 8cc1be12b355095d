"""MQTT into the observation store: a publication to `v1.1/Datastreams(<id>)/Observations` creates an Observation.

One ingest client subscribes at QoS 1 to `$share/<group>/v1.1/+/Observations` (twin.broker.ingest_group) in a
persistent session (clean start off, kept a week), so every ingest process of the city shares one stream and a
restarted one gets what was sent to it meanwhile. Messages are taken in batches (TWIN_MQTT_BATCH messages or TWIN_MQTT_BATCH_MS),
checked by the same code as a POST to /sta/v1.1/Datastreams(<id>)/Observations (sensing.sta.create), stored in
one transaction (sensing.store) and acknowledged (PUBACK) only after it committed: a message the ingest dies
holding is sent again, and the (Datastream, phenomenonTime) upsert stores it once. A refused message (bad JSON,
unknown Datastream, a result of the wrong type, a time more than a day ahead …) is acknowledged too, never
stored, counted in twin_mqtt_messages{outcome="refused.<where>"} and logged with its reason. A message that
carries an `@iot.id` is the server's own publication of a stored observation (sensing.mqtt) and is skipped.
The broker's ACL (twin.broker) has already held each device to its department's Datastreams.
"""

import fcntl
import logging
import queue
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from layers.store import set_write_context
from sensing import store
from sensing.mqtt import OBSERVATIONS, client, connect
from sensing import tables as t
from sensing.sta import create
from twin.auth import Principal
from twin.broker import ingest_group
from twin.errors import ApiError
from twin.metrics import mqtt_messages
from twin.settings import Settings

log = logging.getLogger("sensing.mqtt_ingest")
ACTOR = "mqtt"
INGEST = Principal(0, "mqtt", "mqtt", (), True)  # departments were checked by the broker's ACL
SESSION_S = 7 * 86400
RETRY_S = 1.0  # after the database was unreachable
# Datastreams are read once per this many seconds, not per batch: a Datastream deleted (or changed) meanwhile
# may still take (or be checked by its former type) this long; within one batch the same holds over HTTP.
STREAMS_S = 30.0


class Ingest:
    def __init__(self, settings: Settings, engine: Engine, client_id: str):
        self.settings, self.engine, self.client_id = settings, engine, client_id
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.stopping = threading.Event()
        self.streams: dict = {}
        self.streams_read = 0.0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Ingest until `stop()`; the batch in hand is finished first."""
        mqtt = client(self.settings, self.client_id, manual_ack=True)
        topic = f"$share/{ingest_group(self.settings)}/v1.1/+/Observations"

        def connected(c, userdata, flags, reason, properties):
            if reason.is_failure:
                log.warning("MQTT ingest %s: the broker refused the connection: %s", self.client_id, reason)
                return
            c.subscribe(topic, options=SubscribeOptions(qos=1))

        mqtt.on_connect = connected
        mqtt.on_message = lambda c, userdata, message: self.messages.put(message)
        connect(mqtt, self.settings, persistent_s=SESSION_S, receive_maximum=min(2 * self.settings.mqtt_batch, 65535),
                wait=False)
        try:
            while not self.stopping.is_set():
                batch = self._take()
                if batch:
                    self._store(batch)
                    for message in batch:
                        if message.qos:
                            mqtt.ack(message.mid, message.qos)
        finally:
            mqtt.disconnect()
            mqtt.loop_stop()

    def _take(self) -> list[paho.MQTTMessage]:
        try:
            batch = [self.messages.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.settings.mqtt_batch_ms / 1000
        while len(batch) < self.settings.mqtt_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(self.messages.get_nowait() if left <= 0 else self.messages.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _store(self, batch: list[paho.MQTTMessage]) -> None:
        work = []
        for message in batch:
            parsed = _parse(message)
            if parsed is not None:
                work.append(parsed)
        if not work:
            return
        while True:
            try:
                refused = self._write(work)
                break
            except OperationalError as e:
                if self.stopping.is_set():
                    raise  # unacknowledged: the broker sends the batch again to the next ingest
                log.warning("MQTT ingest: the database is unreachable (%s); retrying", e.orig)
                time.sleep(RETRY_S)
            except DBAPIError:  # one message the database cannot store: find it, store the rest
                refused = [r for item in work for r in self._write_alone(item)]
                break
        for message, where, reason in refused:
            _refuse(message, where, reason)
        mqtt_messages.labels("stored").inc(len(work) - len(refused))

    def _streams(self, conn, wanted: set[int]) -> dict:
        """The Datastreams (and the default FeatureOfInterest create.observation_row finds for each) the last
        STREAMS_S seconds of batches used, with those of `wanted` not among them read in one query."""
        if time.monotonic() - self.streams_read > STREAMS_S:
            self.streams, self.streams_read = {}, time.monotonic()
        missing = wanted - self.streams.keys()
        if missing:
            for row in conn.execute(select(t.datastream).where(t.datastream.c.id.in_(missing))).mappings():
                self.streams[row["id"]] = row
        return self.streams

    def _write(self, work: list) -> list[tuple]:
        """Store the batch in one transaction; returns the refused messages as (message, where, reason)."""
        refused, rows = [], []
        try:
            with self.engine.begin() as conn:
                set_write_context(conn, ACTOR)
                streams = self._streams(conn, {datastream_id for _, datastream_id, _ in work})
                for message, datastream_id, body in work:
                    try:
                        rows.append(create.observation_row(conn, INGEST, body, "payload", datastream_id, streams))
                    except ApiError as e:
                        refused.append((message, e.where or "payload", e.detail))
                store.insert_rows(conn, rows, ACTOR)
        except Exception:
            self.streams = {}  # a rolled-back batch may have made (and kept here) FeaturesOfInterest now gone
            raise
        return refused

    def _write_alone(self, item) -> list[tuple]:
        try:
            return self._write([item])
        except OperationalError:
            raise
        except DBAPIError as e:
            message = str(getattr(e.orig, "diag", None) and e.orig.diag.message_primary or e.orig).strip()
            return [(item[0], "payload", f"the database cannot store it: {message}")]


def _parse(message: paho.MQTTMessage):
    """(message, datastream id, body), or None when it is refused or skipped here."""
    match = OBSERVATIONS.fullmatch(message.topic)
    if match is None:
        _refuse(message, "topic", "observations are created on v1.1/Datastreams(<id>)/Observations only")
        return None
    try:
        body = orjson.loads(message.payload)
    except orjson.JSONDecodeError as e:
        _refuse(message, "json", f"not valid JSON: {e}")
        return None
    if isinstance(body, dict) and "@iot.id" in body:
        mqtt_messages.labels("echo").inc()
        return None
    return message, int(match[1]), body


def _refuse(message: paho.MQTTMessage, where: str, reason: str) -> None:
    mqtt_messages.labels(f"refused.{where.rsplit('.', 1)[-1]}").inc()
    log.warning("refused MQTT message on %s: %s", message.topic[:120], reason)


@contextmanager
def member_slot(directory: Path, limit: int = 64):
    """A client id for this process that a restart takes again: `twin-ingest-<host>-<n>`, n the first of the
    slots (a lock file each in `directory`) no other ingest process on this machine holds."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, limit + 1):
        handle = open(directory / f"ingest-{n}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield f"twin-ingest-{socket.gethostname()}-{n}"
        finally:
            handle.close()
        return
    raise RuntimeError(f"all {limit} MQTT ingest slots in {directory} are taken")
