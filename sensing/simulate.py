"""`twin simulate`: live feeds from the district's instruments into a running server, by all three ways in.

The devices are read from the server's SensorThings API: the monitoring stations' Datastreams (one per
water-quality parameter) report over HTTP (dataArray, with a department key) and, when a broker answers, half
of the stations over MQTT; the online pollution sources (sensing.sources) report over HJ 212 to the server's
listener: real-time data (CN=2011) at each reading, minute data (2051) every ten minutes and hourly data (2061)
every hour, with -Avg/-Min/-Max of the period. What they read is sensing.simulate_scenario's.

Time: the simulated clock starts `--since` before now and runs `--speed` times as fast as the wall clock; each
device reads `--rate` times per simulated hour. The clock never runs past a day ahead of the real one (the
server refuses such times): the simulator stops there. SIGTERM or Ctrl-C stops it after the sends under way,
waiting a few seconds for the broker's acknowledgements; it then logs what was sent and stored.
"""

import asyncio
import logging
import signal
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx

from layers.catalog import get_layer
from sensing import sources
from sensing import water_quality as wq
from sensing.hj212 import Reading
from sensing.simulate_feeds import HttpFeed, Hj212Logger, MqttFeed
from sensing.simulate_scenario import Scenario

log = logging.getLogger("sensing.simulate")
PATHS = ("http", "hj212", "mqtt")
MINUTE_PERIOD = timedelta(minutes=10)  # the 2051 packets' period
REAL_TIME_PHASE = timedelta(seconds=30)  # real-time readings fall between the periods' boundaries
AHEAD_LIMIT = timedelta(hours=23)
TICK_S = 1.0


@dataclass
class Options:
    base_url: str
    key: str
    paths: tuple[str, ...] = PATHS
    hj212_host: str = "127.0.0.1"
    hj212_port: int = 9212
    mqtt_url: str | None = None
    rate: float = 12.0  # readings per device per simulated hour
    speed: float = 1.0  # simulated seconds per wall-clock second
    since: timedelta = timedelta(0)  # the simulated clock starts this long before now
    duration_s: float | None = None  # wall-clock seconds; None: until stopped
    seed: int = 42
    devices: int | None = None  # at most this many stations and this many sources (the first by code)


@dataclass
class Devices:
    stations: dict[str, dict[str, int]] = field(default_factory=dict)  # station code -> field -> datastream id
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # MN -> factor code -> datastream id


async def devices(http: httpx.AsyncClient) -> Devices:
    """The stations' and online sources' Datastreams, as the SensorThings API lists them."""
    found = Devices()
    url = "/sta/v1.1/Datastreams"
    params = {"$select": "id,properties", "$expand": "Thing($select=id,properties)", "$top": "10000"}
    while url:
        response = await http.get(url, params=params)
        response.raise_for_status()
        page = response.json()
        for stream in page["value"]:
            own, thing = stream.get("properties") or {}, (stream.get("Thing") or {}).get("properties") or {}
            if thing.get("layer") == "monitoring_stations" and own.get("hj212_field"):
                found.stations.setdefault(thing["code"], {})[own["hj212_field"]] = stream["@iot.id"]
            elif thing.get("layer") == "pollution_sources" and own.get("hj212_code"):
                found.sources.setdefault(thing["hj212_mn"], {})[own["hj212_code"]] = stream["@iot.id"]
        url, params = page.get("@iot.nextLink"), None
    return found


def first(found: Devices, count: int | None) -> Devices:
    if count is None:
        return found
    return Devices({k: found.stations[k] for k in sorted(found.stations)[:count]},
                   {k: found.sources[k] for k in sorted(found.sources)[:count]})


def due(last: datetime, now: datetime, step: timedelta, phase: timedelta = timedelta(0)) -> list[datetime]:
    """The instants phase + k * step (k whole, from the epoch) in (last, now]."""
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc) + phase
    k = (last - epoch) // step + 1
    out = []
    while epoch + k * step <= now:
        out.append(epoch + k * step)
        k += 1
    return out


class Simulator:
    def __init__(self, options: Options, found: Devices, scenario: Scenario, http: httpx.AsyncClient,
                 stop: asyncio.Event):
        self.options, self.found, self.scenario, self.stop = options, found, scenario, stop
        self.counts: Counter = Counter()
        self.step = timedelta(hours=1) / options.rate
        self.http_feed = HttpFeed(http, options.key, self.counts, stop) if "http" in options.paths else None
        self.mqtt_feed = None
        if "mqtt" in options.paths and options.mqtt_url:
            self.mqtt_feed = MqttFeed.connect(options.mqtt_url, options.key, f"twin-simulate-{options.seed}",
                                              self.counts)
        elif "mqtt" in options.paths:
            log.warning("MQTT: no broker (TWIN_MQTT_URL unset, no managed broker: twin broker up); the MQTT path "
                        "is skipped (its stations report over HTTP when that path is on)")
        self.loggers = ({mn: Hj212Logger(options.hj212_host, options.hj212_port, mn, self.counts)
                         for mn in found.sources} if "hj212" in options.paths else {})
        self.by_mqtt = set()
        if self.mqtt_feed is not None:
            codes = sorted(found.stations)
            self.by_mqtt = set(codes if self.http_feed is None else codes[1::2])

    def _station_readings(self, codes, instants) -> dict[int, list[tuple[datetime, float]]]:
        out: dict[int, list] = {}
        for code in codes:
            for moment in instants:
                if self.scenario.silent(code, moment):
                    continue
                for name, stream in self.found.stations[code].items():
                    value = self.scenario.river(code, name, moment)
                    if value is not None:
                        out.setdefault(stream, []).append((moment, value))
        return out

    async def _source(self, mn: str, last: datetime, now: datetime) -> None:
        logger, codes = self.loggers[mn], sorted(self.found.sources[mn])
        for moment in due(last, now, self.step, REAL_TIME_PHASE):
            if self.stop.is_set():
                return
            readings = [Reading(code, "Rtd", v, "N") for code in codes
                        if (v := self.scenario.outlet(mn, code, moment)) is not None]
            await logger.send("2011", moment, readings)
        for cn, period in (("2051", MINUTE_PERIOD), ("2061", timedelta(hours=1))):
            for end in due(last, now, period):
                if self.stop.is_set():
                    return
                await logger.send(cn, end - period, self._period(mn, codes, end - period, period))

    def _period(self, mn: str, codes: list[str], start: datetime, period: timedelta) -> list[Reading]:
        samples = max(int(period / timedelta(minutes=1)), 1)
        readings = []
        for code in codes:
            values = [v for i in range(samples)
                      if (v := self.scenario.outlet(mn, code, start + period * i / samples)) is not None]
            if values:
                readings += [Reading(code, "Avg", round(sum(values) / len(values), 3), "N"),
                             Reading(code, "Min", min(values), "N"), Reading(code, "Max", max(values), "N")]
        return readings

    async def tick(self, last: datetime, now: datetime) -> None:
        instants = due(last, now, self.step)
        stations = sorted(self.found.stations)
        if self.http_feed is not None or self.mqtt_feed is not None:
            by_http = [c for c in stations if c not in self.by_mqtt] if self.http_feed is not None else []
            if self.mqtt_feed is not None and self.by_mqtt:
                self.mqtt_feed.send(self._station_readings(sorted(self.by_mqtt), instants))
            if by_http:
                await self.http_feed.send(self._station_readings(by_http, instants))
        await asyncio.gather(*(self._source(mn, last, now) for mn in self.loggers))

    async def close(self) -> None:
        for logger in self.loggers.values():
            await logger.close()
        if self.mqtt_feed is not None:
            await asyncio.to_thread(self.mqtt_feed.close)


async def run(options: Options, stop: asyncio.Event | None = None) -> Counter:
    """Feed the server until `stop` is set, SIGTERM or SIGINT arrives, `duration_s` passes or the simulated
    clock reaches a day ahead; returns what was sent and stored, by path."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with httpx.AsyncClient(base_url=options.base_url, timeout=60) as http:
        found = first(await devices(http), options.devices)
        began_at = datetime.now(timezone.utc).replace(microsecond=0)
        start = began_at - options.since
        scenario = Scenario.of(start, options.seed, list(found.stations), list(found.sources))
        simulator = Simulator(options, found, scenario, http, stop)
        per_second = ((sum(len(s) for s in found.stations.values()) * ("http" in options.paths or "mqtt" in
                      options.paths) + sum(len(s) for s in found.sources.values()) * ("hj212" in options.paths))
                      * options.rate * options.speed / 3600)
        log.info("simulating %d stations and %d online sources from %s at %g× (about %.1f observations/s); "
                 "pollution episode at %s, station %s goes silent", len(found.stations), len(found.sources),
                 start.isoformat(), options.speed, per_second, scenario.episode_source, scenario.silent_station)
        began, last = time.monotonic(), start
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - began
                if options.duration_s is not None and elapsed >= options.duration_s:
                    break
                now = start + timedelta(seconds=elapsed * options.speed)
                if now > datetime.now(timezone.utc) + AHEAD_LIMIT:
                    log.info("the simulated clock reached a day ahead of the real one; stopping")
                    break
                await simulator.tick(last, now)
                last = now
                try:
                    await asyncio.wait_for(stop.wait(), TICK_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            await simulator.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    counted = ", ".join(f"{k} {v}" for k, v in sorted(simulator.counts.items()))
    log.info("simulator stopped: %s", counted or "nothing sent")
    return simulator.counts


@contextmanager
def temporary_key():
    """A key of the stations' and sources' department for this run, revoked when it ends."""
    from twin.auth import create_key, revoke_key
    from twin.db import sync_engine

    layers = [wq.LAYER, wq.STATIONS, sources.LAYER]
    with sync_engine().begin() as conn:
        key = create_key(conn, get_layer(wq.STATIONS).department, layers)
    try:
        yield key
    finally:
        with sync_engine().begin() as conn:
            revoke_key(conn, key.split("_")[1])
