"""The SensorThings entity types: their tables, properties (SensorThings name -> column) and navigation.

A to-one navigation is a column of the entity holding the target's id (`fk`); a to-many one is a column of
the target holding the entity's id (`back`), or a link table (`link`: table, entity column, target column).
Observations are the stored ones and the water-quality layer's readings (sensing.water_quality) as one
selectable; the readings are left out for a caller who may not read that layer, and the stations' entities
for one who may not read monitoring_stations (twin.access).
"""

from dataclasses import dataclass, field

from sqlalchemy import exists, select, union_all
from sqlalchemy.sql import Selectable

from sensing import tables as t
from sensing import water_quality as wq


@dataclass(frozen=True)
class Nav:
    target: str
    fk: str | None = None
    back: str | None = None
    link: tuple | None = None

    @property
    def many(self) -> bool:
        return self.fk is None


@dataclass(frozen=True)
class Entity:
    name: str
    plural: str
    table: object
    properties: dict[str, str]
    navs: dict[str, Nav]
    geometries: tuple[str, ...] = ()
    json: tuple[str, ...] = ("properties",)
    times: tuple[str, ...] = ()
    required: tuple[str, ...] = field(default=())

    def source(self, hidden: frozenset[str] = frozenset(), key: int | None = None) -> Selectable:
        if self.name != "Observation":
            if wq.STATIONS in hidden and self.name in PRIVATE_STATIONS:
                return select(self.table).where(PRIVATE_STATIONS[self.name]()).subquery(self.table.name)
            return self.table
        stored = select(*(t.observation.c[c] for c in OBSERVATION_COLUMNS))
        if key is not None:  # one observation: only the part its id's sign says (ids of readings are negative)
            if key >= 0 or wq.LAYER in hidden:
                return stored.where(t.observation.c.id == key).subquery("observations")
            return wq.observations(wq.split_id(key)[0]).subquery("observations")
        if wq.LAYER in hidden:
            return stored.subquery("observations")
        return union_all(stored, wq.observations()).subquery("observations")


# what a caller who may not read the monitoring_stations layer does not see: the stations' entities
PRIVATE_STATIONS = {
    "Thing": lambda: t.thing.c.station_code.is_(None),
    "Location": lambda: t.location.c.station_code.is_(None),
    "Datastream": lambda: t.datastream.c.wq_field.is_(None),
    "FeatureOfInterest": lambda: ~exists().where(t.location.c.id == t.feature_of_interest.c.location_id,
                                                 t.location.c.station_code.is_not(None)),
}
OBSERVATION_COLUMNS = ["id", "datastream_id", "phenomenon_time", "phenomenon_time_end", "result_time", "result",
                       "result_quality", "feature_of_interest_id"]
NAMED = {"id": "id", "name": "name", "description": "description", "properties": "properties"}

ENTITIES = {e.name: e for e in [
    Entity("Thing", "Things", t.thing, NAMED,
           {"Locations": Nav("Location", link=(t.thing_location, "thing_id", "location_id")),
            "HistoricalLocations": Nav("HistoricalLocation", back="thing_id"),
            "Datastreams": Nav("Datastream", back="thing_id")}, required=("name", "description")),
    Entity("Location", "Locations", t.location, NAMED | {"encodingType": "encoding_type", "location": "geom"},
           {"Things": Nav("Thing", link=(t.thing_location, "location_id", "thing_id")),
            "HistoricalLocations": Nav("HistoricalLocation", link=(t.historical_location_location, "location_id",
                                                                   "historical_location_id"))},
           geometries=("geom",), required=("name", "description", "encodingType", "location")),
    Entity("HistoricalLocation", "HistoricalLocations", t.historical_location, {"id": "id", "time": "time"},
           {"Thing": Nav("Thing", fk="thing_id"),
            "Locations": Nav("Location", link=(t.historical_location_location, "historical_location_id",
                                               "location_id"))}, json=(), times=("time",), required=("time",)),
    Entity("Sensor", "Sensors", t.sensor, NAMED | {"encodingType": "encoding_type", "metadata": "metadata"},
           {"Datastreams": Nav("Datastream", back="sensor_id")},
           required=("name", "description", "encodingType", "metadata")),
    Entity("ObservedProperty", "ObservedProperties", t.observed_property, NAMED | {"definition": "definition"},
           {"Datastreams": Nav("Datastream", back="observed_property_id")},
           required=("name", "definition", "description")),
    Entity("Datastream", "Datastreams", t.datastream,
           NAMED | {"unitOfMeasurement": "unit_of_measurement", "observationType": "observation_type",
                    "observedArea": "observed_area"},
           {"Thing": Nav("Thing", fk="thing_id"), "Sensor": Nav("Sensor", fk="sensor_id"),
            "ObservedProperty": Nav("ObservedProperty", fk="observed_property_id"),
            "Observations": Nav("Observation", back="datastream_id")},
           geometries=("observed_area",), json=("properties", "unit_of_measurement"),
           required=("name", "description", "unitOfMeasurement", "observationType")),
    Entity("Observation", "Observations", None,
           {"id": "id", "phenomenonTime": "phenomenon_time", "resultTime": "result_time", "result": "result",
            "resultQuality": "result_quality"},
           {"Datastream": Nav("Datastream", fk="datastream_id"),
            "FeatureOfInterest": Nav("FeatureOfInterest", fk="feature_of_interest_id")}, json=(),
           times=("phenomenon_time", "result_time", "phenomenon_time_end"), required=("result",)),
    Entity("FeatureOfInterest", "FeaturesOfInterest", t.feature_of_interest,
           NAMED | {"encodingType": "encoding_type", "feature": "feature"},
           {"Observations": Nav("Observation", back="feature_of_interest_id")}, geometries=("feature",),
           required=("name", "description", "encodingType", "feature")),
]}
BY_PLURAL = {e.plural: e for e in ENTITIES.values()}
