"""Gates (闸站) as SensorThings Things: every feature of the gates layer, with its Location and Datastreams for
the water levels up- and downstream, the gate opening and the PLC state, written to over /sta/v1.1."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from sensing import gates
from tests.sta_support import bearer, get
from twin.auth import create_key

QUANTITIES = {"upstream_level": "m", "downstream_level": "m", "opening": "%", "plc_state": "{state}"}


def counts(engine) -> tuple:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT (SELECT count(*) FROM sensing.thing WHERE properties ->> 'layer' = 'gates'), "
            "(SELECT count(*) FROM sensing.datastream WHERE properties ->> 'layer' = 'gates'), "
            "(SELECT count(*) FROM sensing.location WHERE properties ? 'gate_code'), "
            "(SELECT count(*) FROM sensing.feature_of_interest f JOIN sensing.location l ON l.id = f.location_id "
            " WHERE l.properties ? 'gate_code')")).one()


@pytest.fixture(scope="module")
def gate(engine, server):
    with engine.connect() as conn:
        return conn.execute(text("SELECT code, name, ST_X(geom) x, ST_Y(geom) y FROM layers.gates "
                                 "ORDER BY code LIMIT 1")).one()


@pytest.fixture
def thing(http, gate):
    found = get(http, "Things", **{"$filter": f"properties/gate_code eq '{gate.code}'",
                                          "$expand": "Datastreams,Locations"})["value"]
    assert len(found) == 1
    return found[0]


def test_every_gate_is_a_thing_with_its_streams(engine, thing, gate):
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM layers.gates")).scalar()
    assert n and counts(engine) == (n, n * len(QUANTITIES), n, n)
    assert thing["name"] == gate.name
    assert thing["Locations"][0]["location"]["coordinates"] == pytest.approx([gate.x, gate.y])
    units = {d["properties"]["quantity"]: d["unitOfMeasurement"]["symbol"] for d in thing["Datastreams"]}
    assert units == QUANTITIES
    state = next(d for d in thing["Datastreams"] if d["properties"]["quantity"] == "plc_state")
    assert state["observationType"].endswith("OM_CountObservation") and state["properties"]["states"]["9"]


def test_a_gate_reading_is_written_and_read_back(http, engine, thing):
    with engine.begin() as conn:
        key = create_key(conn, "水利局", ["gates"])
    streams = {d["properties"]["quantity"]: d["@iot.id"] for d in thing["Datastreams"]}
    moment = datetime(2026, 7, 1, 8, 0, tzinfo=timezone.utc).isoformat()
    url = f"/sta/v1.1/Datastreams({streams['upstream_level']})/Observations"
    response = http.post(url, json={"phenomenonTime": moment, "result": 3.42}, headers=bearer(key))
    assert response.status_code == 201, response.text
    assert [o["result"] for o in get(http, url[len("/sta/v1.1/"):])["value"]] == [3.42]
    response = http.post(f"/sta/v1.1/Datastreams({streams['plc_state']})/Observations",
                                json={"phenomenonTime": moment, "result": 1.5}, headers=bearer(key))
    assert response.status_code == 400 and response.json()["where"] == "body.result"


def test_refresh_is_idempotent_and_follows_the_layer(engine, gate):
    before = counts(engine)
    with engine.begin() as conn:
        gates.refresh(conn)
    assert counts(engine) == before
    with engine.connect() as conn:  # rolled back at the end: the layer is as it was
        conn.execute(text("UPDATE layers.gates SET name = name || '（更名）', geom = ST_Translate(geom, 0.001, 0) "
                          "WHERE code = :c"), {"c": gate.code})
        gates.refresh(conn)
        name, moved = conn.execute(text(
            "SELECT t.name, ST_Equals(l.geom, g.geom) FROM sensing.thing t "
            "JOIN sensing.thing_location tl ON tl.thing_id = t.id JOIN sensing.location l ON l.id = tl.location_id "
            "JOIN layers.gates g ON g.code = t.properties ->> 'gate_code' WHERE g.code = :c"), {"c": gate.code}).one()
        assert name.endswith("（更名）") and moved
        conn.rollback()
    assert counts(engine) == before
