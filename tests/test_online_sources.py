"""The online pollution sources as SensorThings Things: every key unit of the pollution_sources layer, with its
device number (MN), Location and one Datastream per HJ 212 factor of its online monitoring system."""

from sqlalchemy import text

from sensing import sources
from tests.sta_support import get


def counts(engine) -> tuple:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT (SELECT count(*) FROM sensing.thing WHERE properties ->> 'layer' = 'pollution_sources'), "
            "(SELECT count(*) FROM sensing.datastream d JOIN sensing.thing t ON t.id = d.thing_id "
            " WHERE t.properties ->> 'layer' = 'pollution_sources'), "
            "(SELECT count(*) FROM sensing.location WHERE properties ? 'hj212_mn'), "
            "(SELECT count(*) FROM sensing.feature_of_interest f JOIN sensing.location l ON l.id = f.location_id "
            " WHERE l.properties ? 'hj212_mn'), "
            "(SELECT count(*) FROM sensing.historical_location h JOIN sensing.thing t ON t.id = h.thing_id "
            " WHERE t.properties ->> 'layer' = 'pollution_sources')")).one()


def test_every_key_unit_is_a_thing_with_its_factors(server, http, engine):
    with engine.connect() as conn:
        units = conn.execute(text("SELECT credit_code, name, ST_X(geom) x, ST_Y(geom) y FROM layers.pollution_sources "
                                  "WHERE key_unit ORDER BY credit_code")).all()
    assert units
    things, streams, locations, features, history = counts(engine)
    factors = sources.online_factors()
    assert (things, streams, locations, features, history) == (len(units), len(units) * len(factors), len(units),
                                                               len(units), len(units))
    unit = units[0]
    mn = sources.mn_of(unit.credit_code)
    assert len(mn) <= 24
    found = get(http, "Things", **{"$filter": f"properties/hj212_mn eq '{mn}'",
                                   "$expand": "Datastreams($select=id,properties,unitOfMeasurement),Locations"})["value"]
    assert len(found) == 1 and found[0]["name"] == unit.name
    thing = found[0]
    assert {d["properties"]["hj212_code"] for d in thing["Datastreams"]} == set(factors)
    cod = next(d for d in thing["Datastreams"] if d["properties"]["hj212_code"] == "w01018")
    assert cod["unitOfMeasurement"]["symbol"] == "mg/L"
    assert thing["Locations"][0]["location"]["coordinates"] == [round(unit.x, 9), round(unit.y, 9)]
    prop = get(http, f"Datastreams({cod['@iot.id']})/ObservedProperty")
    assert prop["definition"] == "urn:hj212-2017:factor:w01018"


def test_refresh_is_idempotent_and_follows_the_layer(server, engine):
    before = counts(engine)
    with engine.begin() as conn:
        sources.refresh(conn)
    assert counts(engine) == before
    with engine.connect() as conn:  # rolled back at the end: the layer is as it was
        code = conn.execute(text("SELECT credit_code FROM layers.pollution_sources WHERE key_unit "
                                 "ORDER BY credit_code LIMIT 1")).scalar()
        conn.execute(text("UPDATE layers.pollution_sources SET name = name || '（更名）', "
                          "geom = ST_Translate(geom, 0.001, 0) WHERE credit_code = :c"), {"c": code})
        sources.refresh(conn)
        thing, place = conn.execute(text(
            "SELECT t.name, ST_AsText(l.geom) = ST_AsText(s.geom) FROM sensing.thing t "
            "JOIN sensing.thing_location tl ON tl.thing_id = t.id JOIN sensing.location l ON l.id = tl.location_id "
            "JOIN layers.pollution_sources s ON s.credit_code = t.properties ->> 'credit_code' "
            "WHERE t.properties ->> 'hj212_mn' = :mn"), {"mn": sources.mn_of(code)}).one()
        assert thing.endswith("（更名）") and place
        conn.rollback()
    assert counts(engine) == before
