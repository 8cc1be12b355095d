"""`twin simulate` against the real server: its SensorThings HTTP and HJ 212 feeds arrive and read back over
/sta/v1.1, the scenario's episodes are in the values, SIGTERM stops it cleanly; its MQTT feed against a real
mosquitto; `twin demo` with the simulator as its child, stopped by SIGTERM with its ports freed."""

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import text

from sensing.simulate_scenario import EPISODE_AFTER, EPISODE_HOURS, RAIN_AFTER, SILENT_AFTER
from sensing.sources import online_factors
from tests.conftest import TEST_COMPONENTS
from tests.server_support import REPO, free_port, logged_server
from tests.sta_support import keys
from tests.tile_support import wait_for
from twin.cluster import port_is_free

SINCE_H = 6  # the simulated clock starts six hours ago ...
SPEED = 3600  # ... and runs an hour a second


def observations(http: httpx.Client, stream: int) -> list[tuple[datetime, float]]:
    body = http.get(f"/sta/v1.1/Datastreams({stream})/Observations",
                    params={"$orderby": "phenomenonTime", "$top": "10000", "$select": "phenomenonTime,result"}).json()
    return [(datetime.fromisoformat(o["phenomenonTime"].replace("Z", "+00:00")), o["result"]) for o in body["value"]]


def streams(http: httpx.Client, layer: str, key: str) -> dict[str, dict[str, int]]:
    """Thing property `key` -> Datastream hj212 code or field -> id, of the Things of `layer`."""
    body = http.get("/sta/v1.1/Datastreams", params={"$top": "10000", "$select": "id,properties",
                                                     "$expand": "Thing($select=id,properties)"}).json()
    out: dict[str, dict[str, int]] = {}
    for s in body["value"]:
        thing = s["Thing"]["properties"] or {}
        if thing.get("layer") == layer:
            out.setdefault(thing[key], {})[s["properties"].get("hj212_field") or s["properties"]["hj212_code"]] = s[
                "@iot.id"]
    return out


@pytest.fixture(scope="module")
def run(database_url, data_dir, loaded, engine):
    """A server listening for HJ 212, and the simulator fed into it over HTTP and HJ 212, stopped by SIGTERM
    once the scenario's first eight simulated hours have arrived."""
    port = free_port()
    with logged_server(database_url, data_dir, data_dir / "simulate-server.log", hj212_port=port) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        key = keys(engine)["ecology"]
        log = data_dir / "simulate.log"
        env = os.environ | {"TWIN_SIMULATE_KEY": key}
        with open(log, "wb") as sink:
            simulator = subprocess.Popen(
                [sys.executable, "-m", "twin.cli", "simulate", "--url", base, "--hj212-port", str(port),
                 "--paths", "http,hj212", "--rate", "4", "--speed", str(SPEED), "--since", str(SINCE_H),
                 "--seed", "7", "--devices", "4"],
                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        try:
            assert wait_for(lambda: re.search(r"simulating .* from (\S+) at", log.read_text()), 30), log.read_text()
            text = log.read_text()
            start = datetime.fromisoformat(re.search(r"simulating .* from (\S+) at", text)[1])
            episode, silent = re.search(r"pollution episode at (\S+), station (\S+) goes silent", text).groups()
            stations = streams(http, "monitoring_stations", "code")
            sources = streams(http, "pollution_sources", "hj212_mn")
            some = next(code for code in sorted(stations) if code != silent)
            # the feeds are there once the clock passed start + 8 h at a running station
            arrived = lambda: (observations(http, stations[some]["turbidity"]) or [(start, 0)])[-1][0] >= \
                start + timedelta(hours=8)  # noqa: E731
            assert wait_for(arrived, 60), log.read_text()[-3000:]
            simulator.send_signal(signal.SIGTERM)
            began = time.monotonic()
            code = simulator.wait(timeout=30)
            yield {"http": http, "start": start, "episode": episode, "silent": silent, "stations": stations,
                   "sources": sources, "some": some, "exit": code, "stopped_in": time.monotonic() - began,
                   "log": log.read_text()}
        finally:
            if simulator.poll() is None:
                simulator.kill()
                simulator.wait()


def test_sigterm_stops_the_simulator_cleanly(run):
    assert run["exit"] == 0, run["log"][-2000:]
    assert "simulator stopped:" in run["log"]
    assert "http.stored" in run["log"] and "hj212.2011.stored" in run["log"]
    assert "refused" not in run["log"] and "failed" not in run["log"], run["log"][-2000:]


def test_station_feeds_arrive_over_http_with_the_diurnal_oxygen_cycle_and_the_rain(run):
    http, start, station = run["http"], run["start"], run["stations"][run["some"]]
    oxygen = observations(http, station["do"])
    assert len(oxygen) >= 4 * 6
    assert all(2 < v < 14 for _, v in oxygen)
    afternoon = [v for t, v in oxygen if t >= start and (t.hour + 8) % 24 in (14, 15, 16)]
    night = [v for t, v in oxygen if t >= start and (t.hour + 8) % 24 in (2, 3, 4)]
    if afternoon and night:  # both in the simulated window, whatever the hour the test runs at
        assert min(afternoon) > max(night)
    turbidity = observations(http, station["turbidity"])
    before = [v for t, v in turbidity if start <= t < start + RAIN_AFTER]
    during = [v for t, v in turbidity if start + RAIN_AFTER + timedelta(hours=1) <= t
              < start + RAIN_AFTER + timedelta(hours=3)]
    assert before and during and min(during) > 2 * max(before)
    ammonia = observations(http, station["nh3n"])
    peak = start + RAIN_AFTER + timedelta(hours=1)
    rain = [v for t, v in ammonia if peak <= t < peak + timedelta(hours=2)]
    assert rain and max(rain) > max(v for t, v in ammonia if start <= t < start + RAIN_AFTER) + 0.5



def test_station_readings_get_plausible_gb3838_classes(run, engine):
    """Class II-IV water before the rain (Xinwu's canals), worse at the rain's peak; as the file ETL classifies."""
    start, peak = run["start"], run["start"] + RAIN_AFTER + timedelta(hours=1)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT observed_at, water_class FROM layers.water_quality WHERE station_code = :s "
                                 "AND observed_at >= :t ORDER BY observed_at"), {"s": run["some"], "t": start}).all()
    before = [c for t, c in rows if t < start + RAIN_AFTER]
    during = [c for t, c in rows if peak <= t < peak + timedelta(hours=1)]
    assert before and during and set(before) <= {2, 3, 4}
    assert max(during) > max(before)

def test_the_silent_station_stops_reporting(run):
    http, start = run["http"], run["start"]
    times = [t for t, _ in observations(http, run["stations"][run["silent"]]["do"]) if t >= start]
    assert times and max(times) < start + SILENT_AFTER


def test_hj212_feeds_arrive_and_the_episode_exceeds_the_limit(run):
    http, start, sources = run["http"], run["start"], run["sources"]
    limit = online_factors()["w01018"]["limit"]
    begin, end = start + EPISODE_AFTER, start + EPISODE_AFTER + timedelta(hours=EPISODE_HOURS)
    cod = observations(http, sources[run["episode"]]["w01018"])
    during = [v for t, v in cod if begin <= t < end - timedelta(hours=1)]  # periods wholly within it
    assert during and min(during) > limit
    assert all(v <= limit for t, v in cod if start <= t < begin - timedelta(hours=1))  # an hour's mean straddles it
    other = next(mn for mn in sorted(sources) if mn != run["episode"])
    others = [v for t, v in observations(http, sources[other]["w01018"]) if t >= start]
    assert others and max(others) <= limit
    hourly = [t for t, _ in cod if t.minute == 0 and t.second == 0]
    assert hourly  # minute and hourly packets (2051, 2061) are stamped at their periods' starts


def test_demo_feeds_the_map_and_frees_its_ports_on_sigterm(database_url, data_dir, loaded, engine):
    """`twin demo` (the district already loaded) serves with the simulator as its child; SIGTERM to the demo's
    PID stops both, and the HTTP and HJ 212 ports are free once it has exited."""
    port, hj212 = free_port(), free_port()
    log = data_dir / "demo.log"
    env = os.environ | {"TWIN_PORT": str(port), "TWIN_HJ212_PORT": str(hj212),
                        "TWIN_SIMULATE_KEY": keys(engine)["ecology"]}
    with open(log, "wb") as sink:
        demo = subprocess.Popen([sys.executable, "-m", "twin.cli", "demo", "--scale", str(TEST_COMPONENTS)], env=env,
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    try:
        assert wait_for(lambda: "simulating" in log.read_text(errors="replace"), 90), log.read_text()[-3000:]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.get("/sta/v1.1").status_code == 200
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = log.read_text(errors="replace")
    assert "simulator stopped:" in text
    assert port_is_free(port) and port_is_free(hj212)


def test_mqtt_feed_publishes_qos1_to_the_datastream_topics(server, engine, data_dir):
    """The MQTT path against a real mosquitto (anonymous, on a port of its own): every observation published
    with QoS 1 to `v1.1/Datastreams(<id>)/Observations` and acknowledged by the broker."""
    port = free_port()
    config = data_dir / "simulate-mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(config)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    received = []
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="simulate-test", protocol=mqtt.MQTTv5)
    listener.on_message = lambda client, userdata, message: received.append(message)
    try:
        assert wait_for(lambda: not port_is_free(port), 10)
        listener.connect("127.0.0.1", port)
        listener.subscribe("v1.1/#", qos=1)
        listener.loop_start()
        result = subprocess.run(
            [sys.executable, "-m", "twin.cli", "simulate", "--url", server, "--paths", "mqtt", "--mqtt-url",
             f"mqtt://127.0.0.1:{port}", "--devices", "2", "--rate", "12", "--speed", "3600", "--since", "1",
             "--duration", "3"], env=os.environ | {"TWIN_SIMULATE_KEY": keys(engine)["ecology"]}, cwd=REPO,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        counted = dict(re.findall(r"(mqtt\.\w+) (\d+)", result.stderr))
        assert int(counted["mqtt.published"]) >= 2 * 12 and counted["mqtt.acknowledged"] == counted["mqtt.published"]
        assert wait_for(lambda: len(received) >= int(counted["mqtt.published"]), 10)
        assert all(re.fullmatch(r"v1\.1/Datastreams\(\d+\)/Observations", m.topic) and m.qos == 1 for m in received)
        assert {"phenomenonTime", "result"} == set(orjson.loads(received[0].payload))
    finally:
        listener.loop_stop()
        broker.terminate()
        broker.wait(timeout=10)
