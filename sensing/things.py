"""Features of a point layer as SensorThings Things, kept in step with the layer at start-up (`refresh`).

A `Kind` says which features of which layer are Things, the Thing property that names each one (`key`, unique
among Things), and the Datastreams every such Thing has. Each Thing gets a Location and a FeatureOfInterest at its
feature's point (marked by `key` in their properties), and follows the feature's renames and moves. A feature that
leaves the layer (or stops qualifying) keeps its Thing and its history.
"""

from dataclasses import dataclass, field

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.engine import Connection
from sqlalchemy.types import Text

from layers.catalog import get_layer
from sensing import tables as t


@dataclass(frozen=True)
class Stream:
    code: str  # the Datastream's code within its Thing (its properties[Kind.stream_key])
    name: str
    unit: dict  # {name, symbol (UCUM), definition}
    observation_type: str
    definition: str  # its ObservedProperty's
    description: str
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    layer: str
    key: str  # the Thing property naming the feature: unique among Things, also marks its Location
    key_of: str  # SQL over the layer's row `s` (and parameters): the feature's key
    properties: str  # SQL over `s`: jsonb_build_object(…) of the Thing's properties besides layer and key
    description: str  # SQL over `s`: the Thing's description
    sensor: tuple[str, str]  # name, description
    location: str  # the Location's description
    stream_key: str
    streams: tuple[Stream, ...]
    where: str = "true"  # SQL over `s`: which features are Things
    parameters: dict = field(default_factory=dict)  # bound in the SQL above


def _statements(k: Kind) -> tuple[list[str], str]:
    of_thing = (f"JOIN layers.{k.layer} s ON {k.key_of} = t.properties ->> '{k.key}' "
                f"WHERE t.properties ->> 'layer' = '{k.layer}' AND s.geom IS NOT NULL")
    things = f"""
WITH wanted AS (
    SELECT s.name, coalesce({k.description}, '') AS description,
           jsonb_strip_nulls({k.properties} || jsonb_build_object('layer', '{k.layer}', '{k.key}', {k.key_of}))
               AS properties
    FROM layers.{k.layer} s WHERE {k.where}),
renamed AS (
    UPDATE sensing.thing t SET name = w.name, description = w.description,
        properties = coalesce(t.properties, '{{}}') || w.properties, department = :department
    FROM wanted w WHERE t.properties ->> '{k.key}' = w.properties ->> '{k.key}'
      AND ((t.name, t.description, t.department) IS DISTINCT FROM (w.name, w.description, CAST(:department AS text))
           OR NOT coalesce(t.properties, '{{}}') @> w.properties))
INSERT INTO sensing.thing (name, description, properties, department)
SELECT w.name, w.description, w.properties, :department FROM wanted w
WHERE NOT EXISTS (SELECT FROM sensing.thing t WHERE t.properties ->> '{k.key}' = w.properties ->> '{k.key}')
"""
    locations = f"""
WITH made AS (
    INSERT INTO sensing.location (name, description, properties, geom, department)
    SELECT t.name, :location, jsonb_build_object('{k.key}', t.properties ->> '{k.key}'), s.geom, :department
    FROM sensing.thing t {of_thing}
    AND NOT EXISTS (SELECT FROM sensing.thing_location tl WHERE tl.thing_id = t.id)
    RETURNING id, properties ->> '{k.key}' AS key),
linked AS (
    INSERT INTO sensing.thing_location SELECT t.id, made.id FROM made
    JOIN sensing.thing t ON t.properties ->> '{k.key}' = made.key RETURNING thing_id, location_id),
history AS (
    INSERT INTO sensing.historical_location (thing_id, time) SELECT thing_id, now() FROM linked
    RETURNING id, thing_id)
INSERT INTO sensing.historical_location_location
SELECT history.id, linked.location_id FROM history JOIN linked USING (thing_id)
"""
    moves = f"""
UPDATE sensing.location l SET geom = s.geom, name = t.name
FROM sensing.thing_location tl JOIN sensing.thing t ON t.id = tl.thing_id
{of_thing} AND tl.location_id = l.id
  AND l.properties ->> '{k.key}' IS NOT NULL AND (NOT ST_Equals(l.geom, s.geom) OR l.name IS DISTINCT FROM t.name)
"""
    features = f"""
INSERT INTO sensing.feature_of_interest AS f (name, description, feature, department, location_id)
SELECT l.name, l.description, l.geom, :department, l.id FROM sensing.location l
WHERE l.properties ->> '{k.key}' IS NOT NULL
ON CONFLICT (location_id) DO UPDATE SET name = excluded.name, feature = excluded.feature
WHERE f.name IS DISTINCT FROM excluded.name OR NOT ST_Equals(f.feature, excluded.feature)
"""
    datastreams = f"""
INSERT INTO sensing.datastream (name, description, properties, unit_of_measurement, observation_type, thing_id,
                                sensor_id, observed_property_id, department)
SELECT t.name || ' ' || f.name, f.name || ' (' || (t.properties ->> '{k.key}') || ')',
       f.properties || jsonb_build_object('{k.stream_key}', f.code, 'layer', '{k.layer}'), f.unit,
       f.observation_type, t.id, :sensor, op.id, :department
FROM sensing.thing t
CROSS JOIN unnest(:codes, :names, :units, :types, :definitions, :properties)
    AS f(code, name, unit, observation_type, definition, properties)
JOIN sensing.observed_property op ON op.definition = f.definition
WHERE t.properties ->> 'layer' = '{k.layer}'
  AND NOT EXISTS (SELECT FROM sensing.datastream d
                  WHERE d.thing_id = t.id AND d.properties ->> '{k.stream_key}' = f.code)
"""
    return [things, locations, moves, features], datastreams


def refresh(conn: Connection, k: Kind) -> None:
    """Make the kind's Things, Locations, FeaturesOfInterest and Datastreams (idempotent), in the caller's
    transaction."""
    department = get_layer(k.layer).department
    name, description = k.sensor
    sensor = conn.execute(insert(t.sensor).values(
        name=name, description=description, encoding_type="text/html", metadata="", department=department)
        .on_conflict_do_update(index_elements=["name"], set_={"department": department})
        .returning(t.sensor.c.id)).scalar_one()
    for s in k.streams:
        conn.execute(insert(t.observed_property).values(
            name=s.name, definition=s.definition, description=s.description, department=department)
            .on_conflict_do_nothing(index_elements=["definition"]))
    common = k.parameters | {"department": department, "location": k.location}
    statements, datastreams = _statements(k)
    for statement in statements:
        conn.execute(text(statement), common)
    conn.execute(text(datastreams).bindparams(*(bindparam(n, type_=ARRAY(Text)) for n in
                                                ("codes", "names", "types", "definitions")),
                                              *(bindparam(n, type_=ARRAY(JSONB)) for n in ("units", "properties"))),
                 {"codes": [s.code for s in k.streams], "names": [s.name for s in k.streams],
                  "units": [s.unit for s in k.streams], "types": [s.observation_type for s in k.streams],
                  "definitions": [s.definition for s in k.streams], "properties": [s.properties for s in k.streams],
                  "sensor": sensor, "department": department})
