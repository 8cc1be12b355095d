"""HJ 212 packets through the real server: a discharger's data logger on a raw socket, its readings readable as
SensorThings Observations once the data response came back; an unknown device or factor stores nothing."""

import socket
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from sensing.hj212 import frame, unframe
from tests.server_support import free_port, logged_server
from tests.sta_support import bearer, keys

MN = "88888880000042"
CHINA = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def plant(database_url, data_dir, loaded, engine):
    """A server listening for HJ 212 on its own port, and a discharger's Thing with COD and ammonia Datastreams."""
    port = free_port()
    with logged_server(database_url, data_dir, data_dir / "hj212-server.log", hj212_port=port) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        key = keys(engine)["ecology"]
        thing = {"name": "某印染有限公司", "description": "重点排污单位", "properties": {"hj212_mn": MN},
                 "Locations": [{"name": "总排口", "description": "废水总排口", "encodingType": "application/geo+json",
                                "location": {"type": "Point", "coordinates": [120.42, 31.53]}}]}
        created = http.post("/sta/v1.1/Things", json=thing, headers=bearer(key))
        assert created.status_code == 201, created.text
        thing_id = int(created.headers["Location"].rsplit("(", 1)[1].rstrip(")"))
        streams = {}
        for code, name in (("w01018", "化学需氧量"), ("w21003", "氨氮")):
            streams[code] = factor_stream(http, key, thing_id, MN, code, name)
        yield port, http, streams


def factor_stream(http: httpx.Client, key: str, thing_id: int, mn: str, code: str, name: str) -> int:
    """A discharger's Datastream of one HJ 212 factor, made over the API; its id."""
    body = {"name": f"{name} 总排口", "description": name,
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
            "unitOfMeasurement": {"name": "mg/L", "symbol": "mg/L", "definition": "http://unitsofmeasure.org"},
            "properties": {"hj212_code": code}, "Thing": {"@iot.id": thing_id},
            "Sensor": {"name": f"在线分析仪 {mn} {code}", "description": name, "encodingType": "text/html",
                       "metadata": ""},
            "ObservedProperty": observed_property(http, code, name)}
    made = http.post("/sta/v1.1/Datastreams", json=body, headers=bearer(key))
    assert made.status_code == 201, made.text
    return int(made.headers["Location"].rsplit("(", 1)[1].rstrip(")"))


def observed_property(http: httpx.Client, code: str, name: str) -> dict:
    """The factor's ObservedProperty by id if another test made it already (definitions are unique), else inline."""
    definition = f"urn:hj212-2017:factor:{code}"
    known = http.get("/sta/v1.1/ObservedProperties", params={"$filter": f"definition eq '{definition}'"}).json()
    if known["value"]:
        return {"@iot.id": known["value"][0]["@iot.id"]}
    return {"name": name, "definition": definition, "description": name}


def send(port: int, *segments: str, answers: int) -> list[bytes]:
    """Send frames on one connection; read `answers` response frames."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(frame(seg) for seg in segments))
        got = b""
        while got.count(b"\r\n") < answers:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    return [line + b"\r\n" for line in got.split(b"\r\n") if line]


def packet(cn: str, when: datetime, factors: str, flag: int = 5, mn: str = MN, qn: str = "20261206120000001") -> str:
    return f"QN={qn};ST=32;CN={cn};PW=123456;MN={mn};Flag={flag};CP=&&DataTime={when:%Y%m%d%H%M%S};{factors}&&"


def observations(http: httpx.Client, stream: int) -> list[dict]:
    return http.get(f"/sta/v1.1/Datastreams({stream})/Observations", params={"$orderby": "phenomenonTime"}).json()[
        "value"]


def test_real_time_readings_are_stored_before_the_data_response(plant):
    port, http, streams = plant
    when = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=5)
    sent = packet("2011", when, "w01018-Rtd=35.2,w01018-Flag=N;w21003-Rtd=1.8,w21003-Flag=M")
    [answer] = send(port, sent, answers=1)
    assert "CN=9014" in answer.decode() and "QN=20261206120000001" in answer.decode()
    cod, ammonia = observations(http, streams["w01018"]), observations(http, streams["w21003"])
    assert [(o["result"], o["resultQuality"]) for o in cod] == [(35.2, "N")]
    assert [(o["result"], o["resultQuality"]) for o in ammonia] == [(1.8, "M")]
    assert datetime.fromisoformat(cod[0]["phenomenonTime"].replace("Z", "+00:00")) == when


def test_an_hourly_packet_stores_its_averages_and_no_response_is_sent_unasked(plant):
    port, http, streams = plant
    when = datetime.now(CHINA).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    sent = packet("2061", when, "w01018-Min=20.0,w01018-Avg=28.5,w01018-Max=40.1,w01018-Flag=N", flag=4)
    second = packet("2061", when + timedelta(hours=1), "w01018-Avg=30.0,w01018-Flag=N", qn="20261206120000002")
    [answer] = send(port, sent, second, answers=1)  # only the second asks (Flag=5)
    assert "QN=20261206120000002" in answer.decode()
    stored = {o["phenomenonTime"]: o["result"] for o in observations(http, streams["w01018"])}
    assert 28.5 in stored.values() and 30.0 in stored.values() and 40.1 not in stored.values()


@pytest.mark.parametrize("factors, mn", [
    ("w01018-Rtd=99.0,w01018-Flag=N", "88888880009999"),  # unknown device
    ("w01018-Rtd=99.0,w01018-Flag=N;w00000-Rtd=1.0,w00000-Flag=N", MN),  # a factor the Thing does not measure
])
def test_an_unknown_device_or_factor_stores_nothing(plant, factors, mn):
    port, http, streams = plant
    before = {code: observations(http, s) for code, s in streams.items()}
    when = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=1)
    refused = packet("2011", when, factors, mn=mn)
    fine = packet("2011", when, "w21003-Rtd=2.5,w21003-Flag=N", qn="20261206120000009")
    answers = send(port, refused, fine, answers=1)  # the refused one gets no answer; the next still does
    assert len(answers) == 1 and "QN=20261206120000009" in answers[0].decode()
    assert observations(http, streams["w01018"]) == before["w01018"]
    assert 2.5 in [o["result"] for o in observations(http, streams["w21003"])]


def test_the_data_response_is_a_valid_frame_echoing_the_packet(plant):
    port, _, _ = plant
    when = datetime.now(CHINA).replace(microsecond=0)
    [answer] = send(port, packet("2011", when, "w21003-Rtd=1.0,w21003-Flag=N", qn="20261206120000077"), answers=1)
    fields = dict(part.split("=", 1) for part in unframe(answer).split(";") if "=" in part)  # length and CRC checked
    assert (fields["QN"], fields["ST"], fields["CN"], fields["MN"], fields["Flag"]) == (
        "20261206120000077", "91", "9014", MN, "4")


def test_the_listeners_counts_are_in_the_metrics(plant):
    _, http, _ = plant
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    events = {s.labels["event"]: s.value for s in families["twin_hj212_events"].samples if s.name.endswith("_total")}
    assert events["accepted"] >= 4 and events["responses_sent"] >= 4
    assert events["refused.unknown_device"] >= 1 and events["refused.unknown_factor"] >= 1
