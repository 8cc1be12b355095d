"""The monitoring stations as SensorThings Things, their water-quality Datastreams and Observations, which are
the water_quality layer's rows (one copy), read and written through a SensorThings client and plain HTTP."""

from datetime import datetime, timedelta, timezone

import frost_sta_client as fsc
import pytest
from sqlalchemy import text

from tests.sta_support import bearer, get, keys, service
from twin.auth import create_key

PARAMETERS = ["water_temp", "ph", "do", "conductivity", "turbidity", "codmn", "nh3n", "tp", "tn"]


@pytest.fixture(scope="module")
def key(engine, loaded):
    return keys(engine)


@pytest.fixture(scope="module")
def station(engine, server):
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT s.code, s.name, s.evaluation_type, ST_X(s.geom) AS x, ST_Y(s.geom) AS y FROM layers.monitoring_stations s "
            "WHERE EXISTS (SELECT FROM layers.water_quality w WHERE w.station_code = s.code) ORDER BY s.code LIMIT 1")).one()


def test_service_root_lists_entity_sets_and_conformance(http):
    root = get(http, "")
    assert {v["name"] for v in root["value"]} >= {"Things", "Locations", "Datastreams", "Observations",
                                                  "FeaturesOfInterest", "Sensors", "ObservedProperties",
                                                  "HistoricalLocations"}
    assert "http://www.opengis.net/spec/iot_sensing/1.1/req/create-update-delete" in root["serverSettings"]["conformance"]


def test_every_station_is_a_thing_with_its_location(http, engine, station):
    with engine.connect() as conn:
        stations = conn.execute(text("SELECT count(*) FROM layers.monitoring_stations")).scalar()
    things = get(http, "Things", **{"$filter": "properties/layer eq 'monitoring_stations'", "$count": "true",
                                    "$expand": "Locations", "$top": "1000"})
    assert things["@iot.count"] == stations
    found = next(t for t in things["value"] if t["properties"]["code"] == station.code)
    assert found["name"] == station.name
    assert found["Locations"][0]["location"]["type"] == "Point"
    assert found["Locations"][0]["location"]["coordinates"] == pytest.approx([station.x, station.y])
    assert found["Datastreams@iot.navigationLink"].endswith(f"/Things({found['@iot.id']})/Datastreams")


def _thing(http, code):
    return get(http, "Things", **{"$filter": f"properties/code eq '{code}'"})["value"][0]


def test_water_quality_datastreams_and_their_observations_are_the_layer_rows(http, engine, station):
    thing = _thing(http, station.code)
    streams = get(http, f"Things({thing['@iot.id']})/Datastreams", **{"$expand": "ObservedProperty,Sensor"})["value"]
    assert sorted(s["properties"]["hj212_field"] for s in streams) == sorted(PARAMETERS)
    do = next(s for s in streams if s["properties"]["hj212_field"] == "do")
    assert do["unitOfMeasurement"]["symbol"] == "mg/L" and do["properties"]["hj212_code"] == "w01009"
    assert do["ObservedProperty"]["name"] == "溶解氧"
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT observed_at, \"do\", status FROM layers.water_quality "
                                 "WHERE station_code = :c AND \"do\" IS NOT NULL ORDER BY observed_at"),
                            {"c": station.code}).all()
    observations, url = [], f"/sta/v1.1/Datastreams({do['@iot.id']})/Observations"
    params = {"$orderby": "phenomenonTime asc", "$top": "500"}
    while url:
        page = http.get(url, params=params).json()
        observations += page["value"]
        url, params = page.get("@iot.nextLink"), None
    assert [(datetime.fromisoformat(o["phenomenonTime"]), o["result"], o["resultQuality"]) for o in observations] == \
        [(r.observed_at, pytest.approx(r.do), r.status) for r in rows]
    assert all(o["@iot.id"] < 0 for o in observations)
    one = get(http, f"Observations({observations[0]['@iot.id']})", **{"$expand": "Datastream($select=id,name)"})
    assert one["Datastream"]["@iot.id"] == do["@iot.id"]
    assert one["FeatureOfInterest@iot.navigationLink"]


def test_a_posted_water_quality_observation_is_a_classified_layer_row(http, server, engine, station, key):
    thing = _thing(http, station.code)
    streams = {s["properties"]["hj212_field"]: s["@iot.id"]
               for s in get(http, f"Things({thing['@iot.id']})/Datastreams")["value"]}
    # an hour of its own: the simulator's tests feed the stations live, around now
    moment = datetime.now(timezone.utc).replace(microsecond=0, second=0, minute=0) - timedelta(days=40, hours=3)
    client = service(server, key["ecology"])
    for field, value in (("do", 9.0), ("nh3n", 1.2), ("codmn", 3.0), ("tp", 0.05)):
        observation = fsc.Observation(result=value, phenomenon_time=moment.isoformat(),
                                      datastream=fsc.Datastream(id=streams[field]))
        client.create(observation)
        assert observation.id < 0
    items = http.get("/collections/water_quality/items", params={
        "filter": f"station_code = '{station.code}' AND observed_at = TIMESTAMP('{moment.isoformat().replace('+00:00', 'Z')}')"}).json()
    assert len(items["features"]) == 1
    reading = items["features"][0]["properties"]
    assert reading["status"] == "正常" and reading["do"] == 9.0 and reading["nh3n"] == 1.2
    assert reading["water_class"] == 4 and reading["limiting"] == "nh3n"  # GB 3838: NH3-N 1.2 is class IV
    series = http.get("/collections/water_quality/series", params={
        "station": station.code, "aggregate": "hourly",
        "datetime": f"{moment.isoformat().replace('+00:00', 'Z')}/{(moment + timedelta(minutes=59)).isoformat().replace('+00:00', 'Z')}"}).json()
    assert series["periods"][0]["values"]["nh3n"]["mean"] == 1.2 and series["periods"][0]["water_class"] == 4
    # a PATCH of the same observation reclassifies the row
    observation_id = get(http, f"Datastreams({streams['nh3n']})/Observations",
                         **{"$filter": f"phenomenonTime eq {moment.isoformat().replace('+00:00', 'Z')}"})["value"][0]["@iot.id"]
    response = http.patch(f"/sta/v1.1/Observations({observation_id})", json={"result": 0.1}, headers=bearer(key["ecology"]))
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        water_class = conn.execute(text("SELECT water_class FROM layers.water_quality WHERE station_code = :c "
                                        "AND observed_at = :t"), {"c": station.code, "t": moment}).scalar()
    assert water_class < 4


def test_a_station_reading_outside_its_range_or_status_is_refused(http, station, key):
    thing = _thing(http, station.code)
    ph = next(s for s in get(http, f"Things({thing['@iot.id']})/Datastreams")["value"]
              if s["properties"]["hj212_field"] == "ph")
    response = http.post(f"/sta/v1.1/Datastreams({ph['@iot.id']})/Observations", json={"result": 15},
                         headers=bearer(key["ecology"]))
    assert response.status_code == 400 and response.json()["where"] == "body.result"


def test_another_department_may_not_write_a_station(http, station, key):
    thing = _thing(http, station.code)
    stream = get(http, f"Things({thing['@iot.id']})/Datastreams")["value"][0]
    response = http.post(f"/sta/v1.1/Datastreams({stream['@iot.id']})/Observations", json={"result": 1},
                         headers=bearer(key["urban"]))
    assert response.status_code == 403, response.text
    assert http.delete(f"/sta/v1.1/Things({thing['@iot.id']})", headers=bearer(key["ecology"])).status_code == 409


def test_private_station_layers_stay_private_on_sensorthings(http, engine, station):
    with engine.begin() as conn:
        admin = create_key(conn, "信息中心", [], is_admin=True)
        ecology = create_key(conn, "生态环境局", [])
    thing = _thing(http, station.code)
    stream = get(http, f"Things({thing['@iot.id']})/Datastreams", **{"$top": "1"})["value"][0]["@iot.id"]
    try:
        for layer in ("monitoring_stations", "water_quality"):
            assert http.put(f"/admin/layers/{layer}/access", json={"private": True},
                            headers=bearer(admin)).status_code == 200
        anonymous = get(http, "Things", **{"$filter": "properties/layer eq 'monitoring_stations'", "$count": "true"})
        assert anonymous["@iot.count"] == 0
        assert http.get(f"/sta/v1.1/Things({thing['@iot.id']})").status_code == 404
        assert get(http, "Observations", **{"$filter": f"Datastream/id eq {stream}", "$top": "1"})["value"] == []
        owner = http.get(f"/sta/v1.1/Datastreams({stream})/Observations", params={"$top": "1"},
                         headers=bearer(ecology)).json()
        assert len(owner["value"]) == 1
    finally:
        for layer in ("monitoring_stations", "water_quality"):
            http.put(f"/admin/layers/{layer}/access", json={"private": False}, headers=bearer(admin))
