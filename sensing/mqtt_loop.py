"""The network loops of paho clients run in the caller's own thread, through paho's interface for external
loops (`socket`, `loop_read`, `loop_write`, `loop_misc`, `reconnect`), instead of a thread per client.

The MQTT ingest uses it so that one thread receives, stores, acknowledges and publishes: with paho's threads
beside it, each send of one thread waited for another to let go of the interpreter (most of the ingest's time
under load, docs/benchmarks.md, MQTT ingest), and every queued packet also wrote a wake-up byte to paho's
internal socket pair. Here a publish or an acknowledgement made outside a callback is written at once.
"""

import logging
import select
import threading
import time

import paho.mqtt.client as paho

log = logging.getLogger("sensing.mqtt_loop")
READS = 1_000  # packets read from one client per call at most, so the caller gets to its batch in time
RETRY_S = (0.2, 5.0)  # the first and the longest wait before connecting again


class Loop:
    def __init__(self, clients: list[paho.Client], stopping: threading.Event):
        """`clients`: each given its broker by `connect_async` (sensing.mqtt.connect with loop=False)."""
        self.clients, self.stopping = clients, stopping
        self.retry = {client: (0.0, RETRY_S[0]) for client in clients}  # when to connect again, the next wait

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` s for the broker, then read what it sent (callbacks run here), write what is
        queued and keep the connections alive; connect again (waiting longer each time) those that were lost."""
        connected = {}
        for client in self.clients:
            if client.socket() is None:
                self._reconnect(client)
            if (sock := client.socket()) is not None:
                connected[sock] = client
        if not connected:
            self.stopping.wait(min(timeout, max(0.0, min(at for at, _ in self.retry.values()) - time.monotonic())))
            return
        writing = [sock for sock, client in connected.items() if client.want_write()]
        readable, _, _ = select.select(list(connected), writing, [], timeout)
        for sock, client in connected.items():
            rc = self._read(client) if sock in readable else paho.MQTT_ERR_SUCCESS
            if rc == paho.MQTT_ERR_SUCCESS and client.want_write():
                rc = client.loop_write()
            if rc == paho.MQTT_ERR_SUCCESS:
                rc = client.loop_misc()
            if rc != paho.MQTT_ERR_SUCCESS:
                log.warning("MQTT connection lost (%s); connecting again", paho.error_string(rc))
                self.retry[client] = (time.monotonic() + self.retry[client][1], self.retry[client][1])

    def run_for(self, seconds: float) -> None:
        """Keep the connections served for `seconds` (or until stopping)."""
        until = time.monotonic() + seconds
        while not self.stopping.is_set() and (left := until - time.monotonic()) > 0:
            self.pump(min(left, 0.2))

    @staticmethod
    def _read(client: paho.Client) -> int:
        rc, reads = paho.MQTT_ERR_SUCCESS, 0
        while rc == paho.MQTT_ERR_SUCCESS and reads < READS:
            rc, reads = client.loop_read(), reads + 1
            sock = client.socket()
            if sock is None or not select.select([sock], [], [], 0)[0]:
                break
        return rc

    def _reconnect(self, client: paho.Client) -> None:
        at, wait = self.retry[client]
        if time.monotonic() < at:
            return
        try:
            client.reconnect()
            self.retry[client] = (0.0, RETRY_S[0])
        except OSError as e:
            log.warning("cannot reach the MQTT broker (%s); trying again in %.1f s", e, wait)
            self.retry[client] = (time.monotonic() + wait, min(2 * wait, RETRY_S[1]))
