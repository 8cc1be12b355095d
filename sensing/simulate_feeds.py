"""The simulator's three ways in, each as a real client would use it: SensorThings dataArray over HTTP with a
department key, HJ 212-2017 frames over TCP (one connection per data logger, a data response awaited for each
packet), and MQTT QoS 1 publishes to `v1.1/Datastreams(<id>)/Observations`."""

import asyncio
import logging
import threading
from collections import Counter
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

import httpx
import orjson
import paho.mqtt.client as mqtt

from sensing.hj212 import CHINA, Packet, Reading, data_segment, frame

log = logging.getLogger("sensing.simulate")
RESPONSE_TIMEOUT_S = 10
HTTP_BATCH = 1000  # observations per CreateObservations request: a water-quality reading is a row write each


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class HttpFeed:
    def __init__(self, http: httpx.AsyncClient, key: str, counts: Counter, stop: asyncio.Event):
        self.http, self.key, self.counts, self.stop = http, key, counts, stop

    async def send(self, readings: dict[int, list[tuple[datetime, float]]]) -> None:
        """The readings (datastream id -> [(time, value)]) in CreateObservations requests of HTTP_BATCH at most,
        oldest first, until `stop` is set."""
        flat = sorted((moment, stream, value) for stream, rows in readings.items() for moment, value in rows)
        for i in range(0, len(flat), HTTP_BATCH):
            if self.stop.is_set():
                return
            batch: dict[int, list] = {}
            for moment, stream, value in flat[i:i + HTTP_BATCH]:
                batch.setdefault(stream, []).append([iso(moment), value])
            await self._post(batch, len(flat[i:i + HTTP_BATCH]))

    async def _post(self, batch: dict[int, list], total: int) -> None:
        body = [{"Datastream": {"@iot.id": stream}, "components": ["phenomenonTime", "result"], "dataArray": rows}
                for stream, rows in batch.items()]
        try:
            response = await self.http.post("/sta/v1.1/CreateObservations", content=orjson.dumps(body),
                                            headers={"Authorization": f"Bearer {self.key}",
                                                     "Content-Type": "application/json"})
        except httpx.HTTPError as e:
            self.counts["http.failed"] += total
            log.warning("HTTP: %d observations not sent: %r", total, e)
            return
        if response.status_code == 201:
            self.counts["http.stored"] += total
        else:
            self.counts["http.refused"] += total
            log.warning("HTTP: %d observations refused (%d): %s", total, response.status_code, response.text[:300])


class Hj212Logger:
    """One discharger's data logger: its TCP connection (opened again when it drops) and its packets."""

    def __init__(self, host: str, port: int, mn: str, counts: Counter):
        self.host, self.port, self.mn, self.counts = host, port, mn, counts
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.sequence = 0

    async def send(self, cn: str, moment: datetime, readings: list[Reading]) -> None:
        self.sequence += 1
        now = datetime.now(CHINA)
        qn = f"{now:%Y%m%d%H%M%S}{(now.microsecond // 1000 + self.sequence) % 1000:03d}"
        packet = Packet(qn=qn, st="32", cn=cn, pw="123456", mn=self.mn, flag=5, data_time=moment.astimezone(CHINA),
                        readings=readings)
        try:
            if self.streams is None:
                self.streams = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                      RESPONSE_TIMEOUT_S)
            reader, writer = self.streams
            writer.write(frame(data_segment(packet)))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), RESPONSE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.counts[f"hj212.{cn}.failed"] += 1
            log.warning("HJ 212: packet %s of %s not acknowledged: %r", cn, self.mn, e)
            await self.close()
            return
        if b"CN=9014" in answer and qn.encode() in answer:
            self.counts[f"hj212.{cn}.stored"] += 1
        else:
            self.counts[f"hj212.{cn}.refused"] += 1

    async def close(self) -> None:
        if self.streams is not None:
            _, writer = self.streams
            self.streams = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


class MqttFeed:
    """A paho client on its own network thread; every publish is QoS 1 and counted when the broker acknowledges."""

    def __init__(self, client: mqtt.Client, counts: Counter):
        self.client, self.counts = client, counts
        self.pending: list[mqtt.MQTTMessageInfo] = []
        self.lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, key: str, client_id: str, counts: Counter) -> "MqttFeed | None":
        """The feed, or None (after one log line) when no broker answers at `url`. It logs in as a device of
        the key's department (username the key's prefix, password the key) unless the URL names a user."""
        parts = urlsplit(url)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if parts.username:
            client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        else:
            client.username_pw_set(key.split("_")[1], key)
        if parts.scheme in ("mqtts", "ssl"):
            client.tls_set()
        feed = cls(client, counts)
        client.on_publish = feed._acknowledged
        client.on_connect = lambda client, userdata, flags, reason_code, properties: reason_code.is_failure and \
            log.warning("MQTT: the broker at %s refused the connection: %s", parts.hostname, reason_code)
        try:
            client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        except OSError as e:
            log.warning("MQTT: no broker at %s (%s); the MQTT path is skipped (its stations report over HTTP "
                        "when that path is on)",
                        f"{parts.hostname}:{parts.port or 1883}", e.strerror or e)
            return None
        client.loop_start()
        return feed

    def _acknowledged(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            self.counts["mqtt.acknowledged" if not reason_code.is_failure else "mqtt.refused"] += 1

    def send(self, readings: dict[int, list[tuple[datetime, float]]]) -> None:
        for stream, rows in readings.items():
            for moment, value in rows:
                info = self.client.publish(f"v1.1/Datastreams({stream})/Observations",
                                           orjson.dumps({"phenomenonTime": iso(moment), "result": value}), qos=1)
                self.counts["mqtt.published"] += 1
                with self.lock:
                    self.pending.append(info)
        with self.lock:
            self.pending = [info for info in self.pending if not info.is_published()]

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait (at most `timeout_s`) for the broker to acknowledge what was published, then disconnect."""
        with self.lock:
            pending = list(self.pending)
        for info in pending:
            try:
                info.wait_for_publish(timeout_s)
            except (ValueError, RuntimeError):
                break
        self.client.disconnect()
        self.client.loop_stop()
