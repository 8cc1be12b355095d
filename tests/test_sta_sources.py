"""A pollution source's online monitor as SensorThings entities made over the API (frost-sta-client), bulk
dataArray ingest, the query options, and every refusal of bad input."""

from datetime import datetime, timedelta, timezone

import frost_sta_client as fsc
import pytest
from geojson import Point
from sqlalchemy import text

from tests.sta_support import bearer, get, keys, service

MN = "88888880000001"


@pytest.fixture(scope="module")
def key(engine, loaded):
    return keys(engine)


@pytest.fixture(scope="module")
def source(server, key):
    """A discharger's Thing with a COD and an ammonia Datastream, made through the client library."""
    client = service(server, key["ecology"])
    location = fsc.Location(name="排口 1", description="废水总排口", encoding_type="application/geo+json",
                            location=Point((120.41, 31.52)))
    thing = fsc.Thing(name="某化工有限公司", description="重点排污单位",
                      properties={"hj212_mn": MN, "credit_code": "91320214MA1XXXXX0X"}, locations=[location])
    client.create(thing)
    sensor = fsc.Sensor(name="在线 COD 分析仪", description="重铬酸钾法", encoding_type="text/html", metadata="")
    client.create(sensor)
    streams = {}
    for code, name, unit in (("w01018", "化学需氧量", "mg/L"), ("w21003", "氨氮", "mg/L")):
        prop = fsc.ObservedProperty(name=name, definition=f"urn:hj212-2017:factor:{code}", description=name)
        stream = fsc.Datastream(name=f"{name} 排口 1", description=name, observation_type=
                                "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                                unit_of_measurement=fsc.UnitOfMeasurement(name=unit, symbol=unit,
                                                                         definition="http://unitsofmeasure.org"),
                                properties={"hj212_code": code, "hj212_field": code + "-Avg"},
                                thing=fsc.Thing(id=thing.id), sensor=fsc.Sensor(id=sensor.id),
                                observed_property=prop)
        client.create(stream)
        streams[code] = stream.id
    return thing.id, streams


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def test_the_source_reads_back_through_the_client(server, source):
    thing_id, streams = source
    client = service(server)
    thing = client.things().find(thing_id)
    assert thing.properties["hj212_mn"] == MN
    datastreams = client.datastreams().query().filter(f"Thing/id eq {thing_id}").list()
    assert sorted(d.id for d in datastreams) == sorted(streams.values())


def test_data_array_ingest_and_aggregates_equal_sql_over_raw_rows(http, engine, source, key):
    _, streams = source
    start = _now().replace(minute=0, second=0) - timedelta(hours=30)
    rows = [[(start + timedelta(minutes=5 * i)).isoformat(), 20 + (i % 17) * 0.5, "N"] for i in range(360)]
    body = [{"Datastream": {"@iot.id": streams["w01018"]}, "components": ["phenomenonTime", "result", "resultQuality"],
             "dataArray": rows},
            {"Datastream": {"@iot.id": streams["w21003"]}, "components": ["phenomenonTime", "result"],
             "dataArray": [[r[0], 1.5] for r in rows[:10]]}]
    response = http.post("/sta/v1.1/CreateObservations", json=body, headers=bearer(key["ecology"]))
    assert response.status_code == 201, response.text
    assert len(response.json()) == 370 and response.json()[0].startswith("http")
    # a repeated reading replaces the stored one: the last write wins
    response = http.post("/sta/v1.1/CreateObservations", headers=bearer(key["ecology"]), json=[
        {"Datastream": {"@iot.id": streams["w01018"]}, "components": ["phenomenonTime", "result"],
         "dataArray": [[rows[0][0], 99.0]]}])
    assert response.status_code == 201
    with engine.connect() as conn:
        for unit, table in (("hour", "observation_hourly"), ("day", "observation_daily")):
            raw = conn.execute(text(
                "SELECT date_trunc(:u, phenomenon_time, 'Asia/Shanghai') AS p, count(result), min(result), max(result), "
                "sum(result) FROM sensing.observation WHERE datastream_id = :d GROUP BY 1 ORDER BY 1"),
                {"u": unit, "d": streams["w01018"]}).all()
            kept = conn.execute(text(f"SELECT period_start, count, min, max, sum FROM sensing.{table} "
                                     "WHERE datastream_id = :d ORDER BY 1"), {"d": streams["w01018"]}).all()
            assert [tuple(r) for r in kept] == [(r[0], r[1], r[2], r[3], pytest.approx(r[4])) for r in raw]
        latest = conn.execute(text("SELECT phenomenon_time, result FROM sensing.latest_observation "
                                   "WHERE datastream_id = :d"), {"d": streams["w01018"]}).one()
    assert latest.phenomenon_time == datetime.fromisoformat(rows[-1][0])
    page = get(http, f"Datastreams({streams['w01018']})/Observations",
               **{"$orderby": "phenomenonTime asc", "$top": "1", "$select": "result,resultQuality"})
    assert page["value"] == [{"result": 99.0, "resultQuality": None}]  # replaced whole: the last write wins


def test_query_options(http, source):
    thing_id, streams = source
    stream = streams["w01018"]
    page = get(http, f"Datastreams({stream})/Observations", **{"$top": "100", "$skip": "50", "$count": "true",
                                                               "$orderby": "result desc"})
    assert page["@iot.count"] == 360 and len(page["value"]) == 100
    assert [o["result"] for o in page["value"]] == sorted((o["result"] for o in page["value"]), reverse=True)
    assert "%24skip=150" in page["@iot.nextLink"]
    follow = http.get(page["@iot.nextLink"]).json()
    assert len(follow["value"]) == 100
    filtered = get(http, "Observations", **{"$filter": f"Datastream/id eq {stream} and result ge 27 and "
                                                       "hour(phenomenonTime) ge 0 and result sub 1 mul 2 gt 50",
                                            "$count": "true", "$top": "0"})
    assert filtered["@iot.count"] == 1  # only the replaced first reading (99) is past 52
    flagged = get(http, "Observations", **{"$filter": f"Datastream/id eq {stream} and resultQuality eq 'N' and "
                                                      "year(phenomenonTime) ge 2000", "$count": "true", "$top": "0"})
    assert flagged["@iot.count"] == 359
    things = get(http, "Things", **{"$filter": "startswith(name, '某化工') and substringof('化工', name) and "
                                               "properties/hj212_mn eq '" + MN + "'",
                                    "$expand": "Datastreams($orderby=id;$select=id,name;$expand=Observations("
                                               "$top=2;$orderby=phenomenonTime desc;$count=true)),Locations",
                                    "$select": "id,name,Datastreams"})
    assert [t["@iot.id"] for t in things["value"]] == [thing_id]
    datastreams = things["value"][0]["Datastreams"]
    assert [d["@iot.id"] for d in datastreams] == sorted(streams.values())
    assert len(datastreams[0]["Observations"]) == 2 and datastreams[0]["Observations@iot.count"] == 360
    assert "Observations@iot.nextLink" in datastreams[0]
    near = get(http, "Locations", **{"$filter": "geo.intersects(location, geography'POLYGON((120.40 31.51, "
                                                "120.42 31.51, 120.42 31.53, 120.40 31.53, 120.40 31.51))')"})
    assert "排口 1" in [loc["name"] for loc in near["value"]]
    within = get(http, "Locations", **{"$filter": "st_within(location, geography'POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))')"})
    assert within["value"] == []
    assert get(http, f"Things({thing_id})/name") == {"name": "某化工有限公司"}
    named = get(http, f"Datastreams({stream})/Observations", **{"$top": "2", "$select": "result,Datastream",
                                                                "$expand": "Datastream($select=name)"})
    assert [set(o) for o in named["value"]] == [{"result", "Datastream", "Datastream@iot.navigationLink"}] * 2
    assert [set(o["Datastream"]) for o in named["value"]] == [{"name"}] * 2


@pytest.mark.parametrize("params, where", [
    ({"$top": "10001"}, "query.$top"), ({"$skip": "-1"}, "query.$skip"), ({"$count": "maybe"}, "query.$count"),
    ({"$orderby": "nothing desc"}, "query.$orderby"), ({"$select": "nothing"}, "query.$select"),
    ({"$filter": "name eq"}, "query.$filter"), ({"$filter": "nothing eq 1"}, "query.$filter"),
    ({"$filter": "frobnicate(name)"}, "query.$filter"), ({"$expand": "Nothing"}, "query.$expand"),
    ({"$expand": "Datastreams($top=x)"}, "query.$top"), ({"$unknown": "1"}, "query.$unknown"),
    ({"$filter": "name gt 5"}, "query"),
])
def test_bad_query_options_are_400_saying_where(http, params, where):
    response = http.get("/sta/v1.1/Things", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["where"] == where


def test_bad_writes_are_refused_with_reasons(http, source, key):
    _, streams = source
    stream, auth = streams["w01018"], bearer(key["ecology"])
    url = f"/sta/v1.1/Datastreams({stream})/Observations"
    response = http.post(url, content=b"{not json", headers=auth | {"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    response = http.post(url, json={"result": "high"}, headers=auth)
    assert response.status_code == 400 and response.json()["where"] == "body.result"
    future = (_now() + timedelta(days=2)).isoformat()
    response = http.post(url, json={"result": 1, "phenomenonTime": future}, headers=auth)
    assert response.status_code == 400 and response.json()["where"] == "body.phenomenonTime"
    response = http.post("/sta/v1.1/Observations", json={"result": 1, "Datastream": {"@iot.id": 999999}}, headers=auth)
    assert response.status_code == 400 and "999999" in response.json()["description"]
    assert http.get("/sta/v1.1/Things(999999)").status_code == 404
    assert http.get("/sta/v1.1/Things(999999)/Datastreams").status_code == 404
    assert http.patch("/sta/v1.1/Things(999999)", json={"name": "x"}, headers=auth).status_code == 404
    assert http.post(url, json={"result": 1}).status_code == 401
    response = http.post("/sta/v1.1/CreateObservations", headers=auth, json=[
        {"Datastream": {"@iot.id": stream}, "components": ["phenomenonTime", "result"],
         "dataArray": [[_now().isoformat(), 1]] * 100_001}])
    assert response.status_code == 413
    response = http.post("/sta/v1.1/CreateObservations", headers=auth, json=[
        {"Datastream": {"@iot.id": stream}, "components": ["phenomenonTime", "result"],
         "dataArray": [[_now().isoformat(), 1], [_now().isoformat(), "x"]]}])
    assert response.status_code == 400 and response.json()["where"] == "body[0].dataArray[1].result"
    response = http.post("/sta/v1.1/Datastreams", headers=auth, json={
        "name": "x", "description": "x", "observationType": "OM_Whatever", "unitOfMeasurement": {},
        "Thing": {"@iot.id": 1}, "Sensor": {"@iot.id": 1}, "ObservedProperty": {"@iot.id": 1}})
    assert response.status_code == 400 and response.json()["where"] == "body.observationType"


def test_a_department_may_write_only_its_own_things(http, source, key):
    thing_id, streams = source
    urban = bearer(key["urban"])
    assert http.patch(f"/sta/v1.1/Things({thing_id})", json={"name": "x"}, headers=urban).status_code == 403
    assert http.post(f"/sta/v1.1/Datastreams({streams['w01018']})/Observations", json={"result": 1},
                     headers=urban).status_code == 403
    assert http.post("/sta/v1.1/CreateObservations", headers=urban, json=[
        {"Datastream": {"@iot.id": streams["w01018"]}, "components": ["result"], "dataArray": [[1]]}]).status_code == 403
    own = http.post("/sta/v1.1/Things", json={"name": "路灯 1", "description": "城管的"}, headers=urban)
    assert own.status_code == 201
    assert http.patch(f"/sta/v1.1/Things({own.json()['@iot.id']})", json={"name": "路灯 2"},
                      headers=urban).json()["name"] == "路灯 2"
    assert http.delete(f"/sta/v1.1/Things({own.json()['@iot.id']})", headers=urban).status_code == 204
    assert http.get(f"/sta/v1.1/Things({own.json()['@iot.id']})").status_code == 404


@pytest.mark.parametrize("bad, where, reason", [
    (["2021-03-01T10:00:00+08:00", "high"], "result", "must be a number for a Datastream of type OM_Measurement, "
                                                      "not str"),
    (["2021-03-01T10:00:00+08:00", False], "result", "must be a number for a Datastream of type OM_Measurement, "
                                                     "not bool"),
    (["2021-03-01T25:00:00+08:00", 1.0], "phenomenonTime", "'2021-03-01T25:00:00+08:00' is not an ISO 8601 time"),
    (["2021-03-01T10:00:00", 1.0], "phenomenonTime", "'2021-03-01T10:00:00' has no time zone (add Z or +08:00)"),
    ([(datetime.now(timezone.utc) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"), 1.0], "phenomenonTime",
     "is more than a day in the future"),
    (["2021-03-01T10:00:00Z/2021-03-01T09:00:00Z", 1.0], "phenomenonTime", "the interval ends before it starts"),
    (["2021-03-01T10:00:00Z", 1.0, "extra"], "", "must be an array of 2 values"),
])
def test_a_bad_entry_amid_good_ones_is_refused_where_it_is(http, source, key, bad, where, reason):
    _, streams = source
    good = [[f"2021-03-01T0{m}:00:00Z", m + 0.5] for m in range(5)]
    response = http.post("/sta/v1.1/CreateObservations", headers=bearer(key["ecology"]), json=[
        {"Datastream": {"@iot.id": streams["w01018"]}, "components": ["phenomenonTime", "result"], "dataArray": good},
        {"Datastream": {"@iot.id": streams["w21003"]}, "components": ["phenomenonTime", "result"],
         "dataArray": good[:2] + [bad] + good[2:]}])
    assert response.status_code == 400, response.text
    assert response.json()["where"] == "body[1].dataArray[2]" + (f".{where}" if where else "")
    assert response.json()["description"].endswith(reason)


def test_data_array_values_are_stored_as_sent(http, engine, source, key):
    _, streams = source
    components = ["phenomenonTime", "result", "resultQuality", "resultTime"]
    sent = [["2021-04-01T08:00:00+08:00", 3, "N", None],
            ["2021-04-01T00:00:01.250001Z", -2.5, None, "2021-04-01T00:05:00-05:00"]]
    interval = [["2021-04-01T01:00:00Z/2021-04-01T02:00:00Z", 7.25, "T", None]]  # its item is read row by row
    response = http.post("/sta/v1.1/CreateObservations", headers=bearer(key["ecology"]), json=[
        {"Datastream": {"@iot.id": streams["w21003"]}, "components": components, "dataArray": sent},
        {"Datastream": {"@iot.id": streams["w21003"]}, "components": components, "dataArray": interval}])
    assert response.status_code == 201, response.text
    ids = [int(link.rsplit("(", 1)[1].rstrip(")")) for link in response.json()]
    with engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(text(
            "SELECT id, datastream_id, phenomenon_time, phenomenon_time_end, result, result_quality, result_time, "
            "feature_of_interest_id FROM sensing.observation WHERE id = ANY(:ids)"), {"ids": ids})}
    rows = [stored[i] for i in ids]
    utc = lambda text: datetime.fromisoformat(text).astimezone(timezone.utc)  # noqa: E731
    assert [r.phenomenon_time for r in rows] == [utc("2021-04-01T00:00:00+00:00"),
                                                 utc("2021-04-01T00:00:01.250001+00:00"),
                                                 utc("2021-04-01T01:00:00+00:00")]
    assert [r.phenomenon_time_end for r in rows] == [None, None, utc("2021-04-01T02:00:00+00:00")]
    assert [(r.result, r.result_quality) for r in rows] == [(3.0, "N"), (-2.5, None), (7.25, "T")]
    assert [r.result_time for r in rows] == [None, utc("2021-04-01T05:05:00+00:00"), None]
    assert {r.datastream_id for r in rows} == {streams["w21003"]}
    assert all(r.feature_of_interest_id is not None for r in rows)  # the Thing's Location's
