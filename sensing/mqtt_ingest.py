"""MQTT into the observation store: a publication to `v1.1/Datastreams(<id>)/Observations` creates an Observation.

One ingest client subscribes at QoS 1 to `$share/<group>/v1.1/+/Observations` (twin.broker.ingest_group) in a
persistent session (MQTT 3.1.1, clean session off: the broker keeps it for its persistent_client_expiration, a
week), so every ingest process of the city shares one stream and a restarted one gets what was sent to it
meanwhile. One thread does all of it (sensing.mqtt_loop). Messages are held to a rate per Datastream
(sensing.mqtt_limit), taken in batches (TWIN_MQTT_BATCH messages or TWIN_MQTT_BATCH_MS), checked by the same
code as a POST to /sta/v1.1/Datastreams(<id>)/Observations (sensing.sta.create), stored in one transaction
(sensing.store) and acknowledged (PUBACK) only after it committed: a message the ingest dies holding is sent
again, and the (Datastream, phenomenonTime) upsert stores it once. A refused message (bad JSON, unknown
Datastream, a result of the wrong type, a time more than a day ahead, over the rate …) is acknowledged too, never
stored, counted in twin_mqtt_messages{outcome="refused.<where>"} and logged with its reason. A message that
carries an `@iot.id` is the server's own publication of a stored observation (sensing.mqtt) and is skipped.
The broker's ACL (twin.broker) has already held each device to its department's Datastreams.
"""

import fcntl
import logging
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from layers.store import set_write_context
from sensing import store
from sensing.mqtt import OBSERVATIONS, client, connect, publish_stored, sta_base
from sensing.mqtt_limit import StreamLimit
from sensing.mqtt_loop import Loop
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
RETRY_S = 1.0  # after the database was unreachable
# Datastreams are read once per this many seconds, not per batch: a Datastream deleted (or changed) meanwhile
# may still take (or be checked by its former type) this long; within one batch the same holds over HTTP.
STREAMS_S = 30.0
TOPICS = 100_000  # Datastream ids remembered by topic; the map is cleared when full


class Ingest:
    """`publish`: publish what it stores itself, on the connection it receives on (`twin ingest mqtt`); a server
    publishes every path's observations through sensing.mqtt.publishing instead."""

    def __init__(self, settings: Settings, engine: Engine, client_id: str, *, publish: bool = False):
        self.settings, self.engine, self.client_id = settings, engine, client_id
        self.base = sta_base(settings) if publish else None
        self.pending: list[paho.MQTTMessage] = []
        self.first_at = 0.0  # when the oldest pending message came
        self.stopping = threading.Event()
        self.streams: dict = {}
        self.streams_read = 0.0
        self.topics: dict[str, int | None] = {}
        self.limit = StreamLimit(settings.mqtt_stream_rate, settings.mqtt_stream_burst)
        self.loop: Loop | None = None  # made by run()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Ingest until `stop()`; the batch in hand is finished first. Everything happens in this thread."""
        mqtt = client(self.settings, self.client_id, manual_ack=True, session=True)
        topic = f"$share/{ingest_group(self.settings)}/v1.1/+/Observations"

        def connected(c, userdata, flags, reason, properties):
            if reason.is_failure:
                log.warning("MQTT ingest %s: the broker refused the connection: %s", self.client_id, reason)
                return
            c.subscribe(topic, qos=1)

        def received(c, userdata, message: paho.MQTTMessage) -> None:
            echo = _echo(message)  # the server's own publication: nothing to store, so nothing to wait for
            if echo or not self._within_limit(message):
                mqtt_messages.labels("echo" if echo else "refused.rate").inc()
                if message.qos:
                    c.ack(message.mid, message.qos)
                return
            if not self.pending:
                self.first_at = time.monotonic()
            self.pending.append(message)

        mqtt.on_connect = connected
        mqtt.on_message = received
        connect(mqtt, self.settings, wait=False, loop=False)
        self.loop = Loop([mqtt], self.stopping)
        try:
            while not self.stopping.is_set():
                batch = self._take()
                self.limit.report(time.monotonic())
                if batch:
                    rows, ids = self._store(batch)
                    if self.base is not None and rows:
                        publish_stored(mqtt, self.base, rows, ids)
                    for message in batch:
                        if message.qos:
                            mqtt.ack(message.mid, message.qos)
        finally:
            mqtt.disconnect()

    def _take(self) -> list[paho.MQTTMessage]:
        """The next batch: TWIN_MQTT_BATCH messages, or those that came within TWIN_MQTT_BATCH_MS of the first."""
        size, wait = self.settings.mqtt_batch, self.settings.mqtt_batch_ms / 1000
        while not self.stopping.is_set() and len(self.pending) < size:
            if not self.pending:
                self.loop.pump(0.2)
            elif (left := self.first_at + wait - time.monotonic()) > 0:
                self.loop.pump(left)
            else:
                break
        batch, self.pending = self.pending[:size], self.pending[size:]
        self.first_at = time.monotonic()
        return batch

    def _store(self, batch: list[paho.MQTTMessage]) -> tuple[list[store.ObservationRow], list[int]]:
        """Store the batch (what is refused is counted and logged); returns the stored rows and their ids."""
        work = []
        for message in batch:
            parsed = self._parse(message)
            if parsed is not None:
                work.append(parsed)
        if not work:
            return [], []
        while True:
            try:
                refused, rows, ids = self._write(work)
                break
            except OperationalError as e:
                if self.stopping.is_set():
                    raise  # unacknowledged: the broker sends the batch again to the next ingest
                log.warning("MQTT ingest: the database is unreachable (%s); retrying", e.orig)
                self.loop.run_for(RETRY_S)
            except DBAPIError:  # one message the database cannot store: find it, store the rest
                refused, rows, ids = [], [], []
                for item in work:
                    alone = self._write_alone(item)
                    refused += alone[0]
                    rows += alone[1]
                    ids += alone[2]
                break
        for message, where, reason in refused:
            _refuse(message, where, reason)
        mqtt_messages.labels("stored").inc(len(work) - len(refused))
        return rows, ids

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

    def _write(self, work: list) -> tuple[list[tuple], list[store.ObservationRow], list[int]]:
        """Store the batch in one transaction; returns the refused messages as (message, where, reason), and the
        stored rows and their ids."""
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
                ids = store.insert_rows(conn, rows, ACTOR)
        except Exception:
            self.streams = {}  # a rolled-back batch may have made (and kept here) FeaturesOfInterest now gone
            raise
        return refused, rows, ids

    def _write_alone(self, item) -> tuple[list[tuple], list[store.ObservationRow], list[int]]:
        try:
            return self._write([item])
        except OperationalError:
            raise
        except DBAPIError as e:
            message = str(getattr(e.orig, "diag", None) and e.orig.diag.message_primary or e.orig).strip()
            return [(item[0], "payload", f"the database cannot store it: {message}")], [], []

    def _stream_of(self, topic: str) -> int | None:
        """The Datastream id of an Observations topic, None for another topic."""
        if topic not in self.topics:
            if len(self.topics) >= TOPICS:
                self.topics.clear()
            match = OBSERVATIONS.fullmatch(topic)
            self.topics[topic] = int(match[1]) if match else None
        return self.topics[topic]

    def _within_limit(self, message: paho.MQTTMessage) -> bool:
        stream = self._stream_of(message.topic)
        return stream is None or self.limit.allows(stream, time.monotonic())  # another topic is refused later

    def _parse(self, message: paho.MQTTMessage):
        """(message, datastream id, body), or None when it is refused here."""
        stream = self._stream_of(message.topic)
        if stream is None:
            _refuse(message, "topic", "observations are created on v1.1/Datastreams(<id>)/Observations only")
            return None
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError as e:
            _refuse(message, "json", f"not valid JSON: {e}")
            return None
        return message, stream, body


def _echo(message: paho.MQTTMessage) -> bool:
    """Whether the message carries an `@iot.id`: the server's publication of a stored observation."""
    if b'"@iot.id"' not in message.payload:  # most are not: no need to parse them here
        return False
    try:
        body = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and "@iot.id" in body


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
