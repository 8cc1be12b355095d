"""MQTT ingest on the real stack: a device's publication readable over /sta/v1.1, subscribers given the stored
observations of every path, bad payloads refused and counted, a flood from one client held to its
Datastream's rate limit without keeping another's readings out, and a reading published once (on its
SensorThings topic, not again on the events' `twin/v1/observations`)."""

import threading
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pandas as pd
import pytest
from sqlalchemy import text

from etl.run import run_file
from events.mqtt import PAYLOAD_MAX
from tests.broker_support import (broker, counter, device, ingest_process, keys, mqtt_server,  # noqa: F401
                                  streams, wait_for)
from tests.sta_support import bearer

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
FLOOD_BURST = 100  # the module's ingest: a Datastream takes 10 messages a second in bursts of up to 100


@pytest.fixture(scope="module", autouse=True)
def district(loaded):
    """The district loaded before the module's server starts, so that the load's changes are no backlog for its
    events publisher to work through while a test waits for one change."""


@pytest.fixture(scope="module")
def ingest(broker, data_dir):
    with ingest_process(data_dir, mqtt_stream_rate="10", mqtt_stream_burst=str(FLOOD_BURST)) as (process, metrics):
        yield metrics


@pytest.fixture
def http(mqtt_server):
    with httpx.Client(base_url=mqtt_server, timeout=30) as client:
        yield client


def topic(stream: int) -> str:
    return f"v1.1/Datastreams({stream})/Observations"


def stamp(minutes: int) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def stored_at(http: httpx.Client, stream: int, when: str) -> list[dict]:
    answer = http.get(f"/sta/v1.1/Datastreams({stream})/Observations",
                      params={"$filter": f"phenomenonTime eq {when}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["value"]


def test_a_published_observation_is_readable_over_sensorthings(broker, keys, streams, ingest, http):
    with device(broker, keys["ecology"]) as ecology:
        body = {"phenomenonTime": stamp(1), "result": 7.25, "resultQuality": "N"}
        assert not ecology.acked(ecology.publish(topic(streams["ecology"]), orjson.dumps(body))).is_failure
    found = wait_for(lambda: stored_at(http, streams["ecology"], stamp(1)))
    assert [(o["result"], o["resultQuality"]) for o in found] == [(7.25, "N")]


def test_subscribers_get_the_stored_observation_whichever_path_made_it(broker, keys, streams, ingest, http):
    with device(broker, keys["urban"]) as reader, device(broker, keys["ecology"]) as ecology:
        assert not reader.subscribe(topic(streams["ecology"]))[0].is_failure
        ecology.acked(ecology.publish(topic(streams["ecology"]), orjson.dumps({"phenomenonTime": stamp(2),
                                                                               "result": 3})))
        made = http.post(f"/sta/v1.1/Datastreams({streams['ecology']})/Observations", headers=bearer(keys["ecology"]),
                         json={"phenomenonTime": stamp(3), "result": 4.5})
        assert made.status_code == 201, made.text

        def stored():
            return [orjson.loads(m.payload) for m in reader.received if "@iot.id" in orjson.loads(m.payload)]
        assert len(wait_for(lambda: len(stored()) >= 2 and stored())) == 2
        by_time = {o["phenomenonTime"]: o for o in stored()}
        assert by_time[stamp(2)]["result"] == 3.0
        assert by_time[stamp(3)]["@iot.id"] == made.json()["@iot.id"]
        assert by_time[stamp(3)]["@iot.selfLink"].endswith(f"/sta/v1.1/Observations({made.json()['@iot.id']})")
        raw = [orjson.loads(m.payload) for m in reader.received if "@iot.id" not in orjson.loads(m.payload)]
        assert [o["phenomenonTime"] for o in raw] == [stamp(2)]  # the device's own, as the broker passed it on
    assert wait_for(lambda: counter(ingest, "echo") >= 2)  # the server's publications were not ingested again


@pytest.mark.parametrize("stream, payload, where", [
    ("ecology", b'{"phenomenonTime": "2026-03-01T00:10:00Z", "result": ', "json"),
    ("ecology", b'{"phenomenonTime": "2026-03-01T00:11:00Z", "result": "high"}', "result"),
    ("ecology_count", b'{"phenomenonTime": "2026-03-01T00:12:00Z", "result": 1.5}', "result"),
    ("ecology", b'{"phenomenonTime": "2099-01-01T00:00:00Z", "result": 1}', "phenomenonTime"),
    ("ecology", b'{"phenomenonTime": "2026-03-01T00:13:00", "result": 1}', "phenomenonTime"),
    ("ecology", b'[1, 2]', "payload"),
    (987654321, b'{"phenomenonTime": "2026-03-01T00:14:00Z", "result": 1}', "Datastream"),
])
def test_a_bad_payload_is_refused_counted_and_never_stored(broker, keys, streams, ingest, http, stream, payload,
                                                           where):
    key = keys["admin"] if isinstance(stream, int) else keys["ecology"]
    stream = stream if isinstance(stream, int) else streams[stream]
    before = counter(ingest, f"refused.{where}")
    with device(broker, key) as sender:
        assert not sender.acked(sender.publish(topic(stream), payload)).is_failure  # the broker took it
    assert wait_for(lambda: counter(ingest, f"refused.{where}") == before + 1), f"refused.{where} not counted"
    if stream in streams.values():
        answer = http.get(f"/sta/v1.1/Datastreams({stream})/Observations",
                          params={"$filter": "phenomenonTime ge 2026-03-01T00:10:00Z"})
        assert answer.json()["value"] == []


def test_a_flood_from_one_client_is_held_to_its_rate_and_does_not_keep_anothers_readings_out(
        broker, keys, streams, ingest, http, engine):
    flood, quiet = 5000, 30
    refused = counter(ingest, "refused.rate")
    with device(broker, keys["ecology"]) as flooder, device(broker, keys["admin"]) as other:

        def flooding():
            for i in range(flood):
                flooder.publish(topic(streams["ecology_count"]), orjson.dumps({"phenomenonTime": stamp(1000 + i),
                                                                                "result": i}), qos=0)
        thread = threading.Thread(target=flooding)
        thread.start()
        mids = [other.publish(topic(streams["ecology"]), orjson.dumps({"phenomenonTime": stamp(100 + i),
                                                                        "result": i})) for i in range(quiet)]
        thread.join()
        assert not any(other.acked(mid).is_failure for mid in mids)

    def count(stream: int, first: int, last: int) -> int:
        answer = http.get(f"/sta/v1.1/Datastreams({stream})/Observations", params={
            "$filter": f"phenomenonTime ge {stamp(first)} and phenomenonTime le {stamp(last)}", "$count": "true",
            "$top": "0"})
        return answer.json()["@iot.count"]
    assert wait_for(lambda: count(streams["ecology"], 100, 100 + quiet) == quiet, timeout=30)
    assert wait_for(lambda: count(streams["ecology_count"], 1000, 1000 + flood) > 0)
    assert wait_for(lambda: counter(ingest, "refused.rate") - refused > flood // 2)
    flooded = count(streams["ecology_count"], 1000, 1000 + flood)
    assert flooded + counter(ingest, "refused.rate") - refused <= flood
    assert flooded < flood // 2, f"{flooded} of the flood's {flood} stored: the limit did not hold"


def test_a_key_receives_changes_of_public_layers_on_the_managed_broker(broker, keys, http, engine, loaded):
    with engine.connect() as conn:
        fid = conn.execute(text("SELECT min(fid) FROM layers.city_components")).scalar()
    with device(broker, keys["ecology"]) as reader:
        assert not reader.subscribe("twin/v1/changes/city_components/#")[0].is_failure
        current = http.get(f"/collections/city_components/items/{fid}")
        edited = http.patch(f"/collections/city_components/items/{fid}", json={"properties": {"status": "破损"}},
                            headers=bearer(keys["urban"]) | {"If-Match": current.headers["ETag"]})
        assert edited.status_code == 200, edited.text
        message = wait_for(lambda: [m for m in reader.received if m.topic == f"twin/v1/changes/city_components/{fid}"])
    assert orjson.loads(message[0].payload)["fid"] == fid


def test_a_reading_is_published_once_on_its_datastream_topic_and_a_water_quality_row_on_the_events_topic(
        broker, keys, streams, http, engine, loaded, tmp_path):
    """A reading stored over /sta/v1.1 goes out on `v1.1/Datastreams(id)/Observations` only, never again on
    `twin/v1/observations/#`; a water-quality row loaded from a file, a change of the change log with no
    SensorThings publication, still goes out there. The events publisher keeps the log's order, so once the
    file's row (stored after the reading) has come, the reading would have come before it."""
    with engine.connect() as conn:
        station = conn.execute(text("SELECT code FROM layers.monitoring_stations ORDER BY code LIMIT 1")).scalar_one()
    path = tmp_path / "readings.csv"
    pd.DataFrame([(station, "2001-01-05 08:00", 7.0, 0.2)], columns=["站点编码", "监测时间", "溶解氧", "氨氮"]
                 ).to_csv(path, index=False)
    with device(broker, keys["ecology"]) as reader:
        for wanted in (topic(streams["ecology"]), "twin/v1/observations/#"):
            assert not reader.subscribe(wanted)[0].is_failure
        made = http.post(f"/sta/v1.1/Datastreams({streams['ecology']})/Observations", headers=bearer(keys["ecology"]),
                         json={"phenomenonTime": stamp(20), "result": 5.5})
        assert made.status_code == 201, made.text
        try:
            assert run_file(engine, "water_quality", path).status == "succeeded"

            def of_file():
                return [m for m in reader.received if m.topic.startswith("twin/v1/observations/water_quality/")
                        and (orjson.loads(m.payload)["feature"] or {}).get("properties", {}).get("station_code")
                        == station]
            [row] = wait_for(of_file, timeout=30)
        finally:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM layers.water_quality WHERE station_code = :s "
                                  "AND observed_at < '2001-01-06'"), {"s": station})

        def on_stream():
            return [orjson.loads(m.payload)["@iot.id"] for m in reader.received if m.topic == topic(streams["ecology"])
                    and orjson.loads(m.payload)["phenomenonTime"] == stamp(20)]
        assert wait_for(on_stream) == [made.json()["@iot.id"]]
    assert orjson.loads(row.payload)["operation"] == "insert"
    events = [orjson.loads(m.payload) for m in reader.received if m.topic.startswith("twin/v1/observations/")]
    assert not [e for e in events if e.get("operation") == "observation"], "a reading went out on twin/v1 again"


def test_a_change_too_big_for_one_broker_packet_goes_without_its_feature_and_publishing_goes_on(
        broker, keys, http, engine):
    """A district's boundary makes its change's event bigger than the broker takes in one packet: sent as it is,
    the broker would drop the publisher's connection and the batch be retried for ever, nothing after it sent."""
    with engine.connect() as conn:
        fid, size = conn.execute(text("SELECT fid, length(ST_AsGeoJSON(geom)) FROM layers.districts "
                                      "ORDER BY 2 DESC LIMIT 1")).one()
    assert size > PAYLOAD_MAX
    url, admin = f"/collections/districts/items/{fid}", bearer(keys["admin"])
    level = http.get(url).json()["properties"]["level"]
    with device(broker, keys["ecology"]) as reader:
        assert not reader.subscribe(f"twin/v1/changes/districts/{fid}")[0].is_failure
        for value in ("测试", level):
            edited = http.patch(url, json={"properties": {"level": value}},
                                headers=admin | {"If-Match": http.get(url).headers["ETag"]})
            assert edited.status_code == 200, edited.text
        assert wait_for(lambda: len(reader.received) >= 2, timeout=30), "the events publisher is stuck"
    events = [orjson.loads(m.payload) for m in reader.received]
    assert [(e["fid"], e["operation"], e["feature"], e["feature_omitted"]) for e in events] == \
        [(fid, "update", None, True)] * 2
    assert [e["changed"]["level"] for e in events] == [{"from": level, "to": "测试"}, {"from": "测试", "to": level}]
