"""Online pollution sources as SensorThings: every key discharger (环境监管重点单位, `key_unit`) of the
`pollution_sources` layer reports online, so it is a Thing with the device number (MN) of its main wastewater
outlet's data logger, its Location and FeatureOfInterest at the source's point, and one Datastream per factor
its online monitoring system reports over HJ 212 (sensing/data/online_factors.toml, each Datastream's
`properties.hj212_code`), which is what the HJ 212 listener looks a packet's MN and factors up by.

The MN is the unit's unified social credit code followed by its outlet's permit code DW001 (23 characters, within
the standard's 24). `refresh` makes what is missing and follows renames and moves; it runs at start-up, as the
stations' refresh does. A source that stops being a key unit keeps its Thing and its history.
"""

import tomllib
from functools import cache
from pathlib import Path

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.engine import Connection
from sqlalchemy.types import Text

from layers.catalog import get_layer
from sensing import tables as t
from sensing import water_quality as wq

LAYER = "pollution_sources"
OUTLET = "DW001"
SENSOR = "污染源在线监测系统 (pollution source online monitoring system)"
FACTORS = Path(__file__).parent / "data" / "online_factors.toml"
UCUM = {"": "[pH]", "mg/L": "mg/L", "L/s": "L/s"}


@cache
def online_factors() -> dict[str, dict]:
    """Factor code -> {name, unit, limit or low/high}."""
    with open(FACTORS, "rb") as f:
        return tomllib.load(f)["factors"]


def mn_of(credit_code: str) -> str:
    return credit_code + OUTLET


def unit_of(unit: str) -> dict:
    return {"name": unit or "pH", "symbol": UCUM.get(unit, unit), "definition": "http://unitsofmeasure.org/ucum.html"}


THINGS = """
INSERT INTO sensing.thing AS t (name, description, properties, department)
SELECT s.name, coalesce(s.address, ''),
       jsonb_strip_nulls(jsonb_build_object('layer', 'pollution_sources', 'fid', s.fid, 'credit_code', s.credit_code,
           'hj212_mn', s.credit_code || :outlet, 'outlet', :outlet, 'permit_id', s.permit_id,
           'industry_code', s.industry_code, 'industry_name', s.industry_name)),
       :department
FROM layers.pollution_sources s WHERE s.key_unit
ON CONFLICT ((properties ->> 'hj212_mn')) DO UPDATE SET name = excluded.name, description = excluded.description,
    properties = coalesce(t.properties, '{}') || excluded.properties, department = excluded.department
WHERE (t.name, t.description, t.department) IS DISTINCT FROM (excluded.name, excluded.description, excluded.department)
   OR NOT coalesce(t.properties, '{}') @> excluded.properties
"""
SOURCE_OF_THING = ("JOIN layers.pollution_sources s ON s.credit_code = t.properties ->> 'credit_code' "
                   "WHERE t.properties ->> 'layer' = 'pollution_sources' AND s.geom IS NOT NULL")
LOCATIONS = f"""
WITH made AS (
    INSERT INTO sensing.location (name, description, properties, geom, department)
    SELECT t.name, 'outlet ' || :outlet, jsonb_build_object('hj212_mn', t.properties ->> 'hj212_mn'), s.geom,
           :department
    FROM sensing.thing t {SOURCE_OF_THING}
    AND NOT EXISTS (SELECT FROM sensing.thing_location tl WHERE tl.thing_id = t.id)
    RETURNING id, properties ->> 'hj212_mn' AS mn),
linked AS (
    INSERT INTO sensing.thing_location SELECT t.id, made.id FROM made
    JOIN sensing.thing t ON t.properties ->> 'hj212_mn' = made.mn RETURNING thing_id, location_id),
history AS (
    INSERT INTO sensing.historical_location (thing_id, time) SELECT thing_id, now() FROM linked
    RETURNING id, thing_id)
INSERT INTO sensing.historical_location_location
SELECT history.id, linked.location_id FROM history JOIN linked USING (thing_id)
"""
MOVES = """
UPDATE sensing.location l SET geom = s.geom, name = t.name
FROM sensing.thing_location tl JOIN sensing.thing t ON t.id = tl.thing_id
JOIN layers.pollution_sources s ON s.credit_code = t.properties ->> 'credit_code'
WHERE tl.location_id = l.id AND t.properties ->> 'layer' = 'pollution_sources' AND s.geom IS NOT NULL
  AND l.properties ->> 'hj212_mn' IS NOT NULL AND (NOT ST_Equals(l.geom, s.geom) OR l.name IS DISTINCT FROM t.name)
"""
FEATURES = """
INSERT INTO sensing.feature_of_interest AS f (name, description, feature, department, location_id)
SELECT l.name, l.description, l.geom, :department, l.id FROM sensing.location l
WHERE l.properties ->> 'hj212_mn' IS NOT NULL
ON CONFLICT (location_id) DO UPDATE SET name = excluded.name, feature = excluded.feature
WHERE f.name IS DISTINCT FROM excluded.name OR NOT ST_Equals(f.feature, excluded.feature)
"""
DATASTREAMS = """
INSERT INTO sensing.datastream (name, description, properties, unit_of_measurement, observation_type, thing_id,
                                sensor_id, observed_property_id, department)
SELECT t.name || ' ' || f.name, f.name || ' (' || (t.properties ->> 'hj212_mn') || ')',
       jsonb_build_object('hj212_code', f.code, 'layer', 'pollution_sources'), f.unit, :observation_type, t.id,
       :sensor, op.id, :department
FROM sensing.thing t
CROSS JOIN unnest(:codes, :names, :units) AS f(code, name, unit)
JOIN sensing.observed_property op ON op.definition = 'urn:hj212-2017:factor:' || f.code
WHERE t.properties ->> 'layer' = 'pollution_sources'
  AND NOT EXISTS (SELECT FROM sensing.datastream d WHERE d.thing_id = t.id AND d.properties ->> 'hj212_code' = f.code)
"""


def refresh(conn: Connection) -> None:
    """Make the online sources' Things, Locations, FeaturesOfInterest and Datastreams (idempotent), in the
    caller's transaction."""
    department = get_layer(LAYER).department
    sensor = conn.execute(insert(t.sensor).values(
        name=SENSOR, description="HJ 353/HJ 355 水污染源在线监测系统", encoding_type="text/html", metadata="",
        department=department).on_conflict_do_update(index_elements=["name"], set_={"department": department})
        .returning(t.sensor.c.id)).scalar_one()
    factors = online_factors()
    for code, factor in factors.items():
        conn.execute(insert(t.observed_property).values(
            name=factor["name"], definition=wq.observed_property_definition(code), department=department,
            description=f"{factor['name']} (HJ 212-2017 {code})").on_conflict_do_nothing(index_elements=["definition"]))
    common = {"department": department, "outlet": OUTLET}
    conn.execute(text(THINGS), common)
    conn.execute(text(LOCATIONS), common)
    conn.execute(text(MOVES))
    conn.execute(text(FEATURES), {"department": department})
    conn.execute(text(DATASTREAMS).bindparams(bindparam("codes", type_=ARRAY(Text)),
                                              bindparam("names", type_=ARRAY(Text)),
                                              bindparam("units", type_=ARRAY(JSONB))),
                 {"codes": list(factors), "names": [f["name"] for f in factors.values()],
                  "units": [unit_of(f["unit"]) for f in factors.values()], "observation_type": wq.MEASUREMENT,
                  "sensor": sensor, "department": department})
