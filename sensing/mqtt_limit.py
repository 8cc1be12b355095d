"""A flood held back: each Datastream takes at most TWIN_MQTT_STREAM_RATE messages a second over MQTT, in bursts
of up to TWIN_MQTT_STREAM_BURST (a token bucket per Datastream). What is over is refused before it is parsed:
acknowledged, never stored, counted (twin_mqtt_messages{outcome="refused.rate"}) and logged once a minute per
Datastream with the number refused.

Per Datastream, not per client: the broker does not tell the ingest who published a message, and mosquitto 2.0
has no rate limit of its own. A device publishes its own Datastreams, and the broker's ACL holds a key to its
department's, so a flooding device fills only its own buckets; others' messages go on being stored.
"""

import logging

log = logging.getLogger("sensing.mqtt_limit")
KEPT = 100_000  # Datastreams with a bucket; all are dropped (full again) when there are more
REPORT_S = 60.0


class StreamLimit:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.buckets: dict[int, tuple[float, float]] = {}  # Datastream -> (tokens, when counted)
        self.refused: dict[int, int] = {}  # Datastream -> refused since the last report
        self.reported_at = -REPORT_S  # the first refusals are reported at once

    def allows(self, stream: int, now: float) -> bool:
        """Whether a message to `stream` at `now` (time.monotonic) is within its limit (it is then counted)."""
        tokens, then = self.buckets.get(stream, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self._keep(stream, tokens - 1, now)
            return True
        self._keep(stream, tokens, now)
        self.refused[stream] = self.refused.get(stream, 0) + 1
        return False

    def report(self, now: float) -> None:
        """Log the refusals since the last report, one line per Datastream, if that was a minute ago."""
        if not self.refused or now - self.reported_at < REPORT_S:
            return
        for stream, count in sorted(self.refused.items()):
            log.warning("refused %d MQTT messages to Datastream %d over its limit of %g a second (bursts of %g)",
                        count, stream, self.rate, self.burst)
        self.refused, self.reported_at = {}, now

    def _keep(self, stream: int, tokens: float, now: float) -> None:
        if stream not in self.buckets and len(self.buckets) >= KEPT:
            self.buckets.clear()
        self.buckets[stream] = (tokens, now)
