"""Water-quality readings as SensorThings: one copy, the `water_quality` layer.

Every monitoring station is a Thing (its Location and FeatureOfInterest are the station's point), and each
real parameter of the water_quality spec is one Datastream of it (`wq_field`): the migration's
`sensing.sync_stations` makes them, `refresh` keeps the parameter list in step with the spec. Their
Observations are the layer's rows unpivoted, never copied: the observation of parameter number `position`
(1-based, in spec order) of row `fid` has the id -(fid * 16 + position), which no stored observation
(positive ids) can have. A written observation updates its row's column and the row's GB 3838 class, computed
by layers.water_class as the file ETL does.
"""

from datetime import datetime

from sqlalchemy import Float, and_, case, cast, null, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from layers.catalog import get_layer, shipped
from layers.factors import factors
from layers.store import set_write_context
from layers.tables import current
from layers.water_class import classify
from sensing import tables as t

# The readings classed by GB 3838 and their stations, as the shipped specs declare them: the observation store
# (migration 0013) keeps its Datastreams in step with these two tables.
LAYER = next(s.id for s in shipped().values() if s.classify == "gb3838")
STATIONS = shipped()[LAYER].stations
STRIDE = 16  # parameters per row the ids leave room for
NORMAL = "正常"
SENSOR = "水质自动监测站 (water-quality automatic monitoring station)"
UCUM = {"℃": "Cel", "mg/L": "mg/L", "μS/cm": "uS/cm", "NTU": "{NTU}", None: "1", "": "1"}
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"


def parameters() -> list:
    fields = [f for f in get_layer(LAYER).fields if f.type == "real"]
    if len(fields) >= STRIDE:
        raise RuntimeError(f"{len(fields)} water-quality parameters do not fit the observation ids' stride")
    return fields


def unit_of(field) -> dict:
    if field.name == "ph":
        return {"name": "pH", "symbol": "[pH]", "definition": "http://unitsofmeasure.org/ucum.html#para-45"}
    return {"name": field.unit or "1", "symbol": UCUM.get(field.unit, field.unit),
            "definition": "http://unitsofmeasure.org/ucum.html"}


def observed_property_definition(code: str) -> str:
    return f"urn:hj212-2017:factor:{code}"


def refresh(conn: Connection) -> None:
    """Make the parameters' Sensor, ObservedProperties and parameter rows, then the station Things (idempotent)."""
    department = get_layer(STATIONS).department
    sensor = conn.execute(insert(t.sensor).values(
        name=SENSOR, description="GB 3838 水质自动监测站的在线分析仪", encoding_type="text/html", metadata="",
        department=department).on_conflict_do_update(index_elements=["name"], set_={"department": department})
        .returning(t.sensor.c.id)).scalar_one()
    for position, field in enumerate(parameters(), start=1):
        code = factors().get(field.name, {}).get("hj212")
        definition = observed_property_definition(code or field.name)
        row = insert(t.observed_property).values(name=field.zh, definition=definition, department=department,
                                                 description=f"{field.zh} ({field.name})")
        prop = conn.execute(row.on_conflict_do_update(index_elements=["definition"], set_={"name": row.excluded.name})
                            .returning(t.observed_property.c.id)).scalar_one()
        values = {"position": -position, "title": field.zh, "unit_of_measurement": unit_of(field),
                  "hj212_code": code, "observed_property_id": prop, "sensor_id": sensor}
        row = insert(t.water_quality_parameter).values(field=field.name, **values)
        conn.execute(row.on_conflict_do_update(index_elements=["field"], set_=values))
    # positions were parked at negatives so that a reordered spec cannot collide on the unique position
    conn.execute(t.water_quality_parameter.update().values(position=-t.water_quality_parameter.c.position))
    names = [f.name for f in parameters()]
    conn.execute(t.water_quality_parameter.delete().where(t.water_quality_parameter.c.field.not_in(names)))
    conn.execute(text("SELECT sensing.sync_stations(:department)"), {"department": department})


def observations(fid: int | None = None):
    """The stations' observations (of row `fid` only, if given), unpivoted from the layer, with
    sensing.observation's columns."""
    w, d, th, p = current(get_layer(LAYER)), t.datastream, t.thing, t.water_quality_parameter
    loc, foi = t.location, t.feature_of_interest
    result = case({f.name: cast(w.c[f.name], Float) for f in parameters()}, value=d.c.wq_field)
    return (select((-(w.c.fid * STRIDE + p.c.position)).label("id"), d.c.id.label("datastream_id"),
                   w.c.observed_at.label("phenomenon_time"), cast(null(), w.c.observed_at.type)
                   .label("phenomenon_time_end"), w.c.observed_at.label("result_time"), result.label("result"),
                   w.c.status.label("result_quality"), foi.c.id.label("feature_of_interest_id"))
            .select_from(w.join(th, th.c.station_code == w.c.station_code)
                         .join(d, and_(d.c.thing_id == th.c.id, d.c.wq_field.is_not(None)))
                         .join(p, p.c.field == d.c.wq_field)
                         .outerjoin(loc, loc.c.station_code == th.c.station_code)
                         .outerjoin(foi, foi.c.location_id == loc.c.id))
            .where(result.is_not(None), *([w.c.fid == fid] if fid is not None else [])))


def split_id(observation_id: int) -> tuple[int, int]:
    """(row fid, parameter position) of a water-quality observation id (negative)."""
    return divmod(-observation_id, STRIDE)


def write_reading(conn: Connection, actor: str, station_code: str, observed_at: datetime,
                  values: dict[str, float | None], status: str | None) -> int:
    """Set some parameters of one station's reading (creating the row, status 正常 unless given), classify it
    again as the file ETL does, in the caller's transaction; returns the row's fid."""
    spec = get_layer(LAYER)
    w = current(spec)
    set_write_context(conn, actor)
    conn.execute(text("SELECT twin.claim_change_log()"))  # writers of the layers queue here (migration 0005)
    row = conn.execute(select(w).where(w.c.station_code == station_code, w.c.observed_at == observed_at)
                       .with_for_update()).mappings().first()
    names = [f.name for f in parameters()]
    merged = {n: (row[n] if row else None) for n in names} | values
    status = status or (row["status"] if row else NORMAL)
    evaluation_type = conn.execute(text("SELECT evaluation_type FROM layers.monitoring_stations WHERE code = :c"),
                                   {"c": station_code}).scalar()
    water_class, limiting = (classify(merged, evaluation_type) if status == NORMAL and evaluation_type
                             else (None, None))
    changed = merged | {"status": status, "water_class": water_class, "limiting": limiting}
    if row is None:
        return conn.execute(w.insert().values(station_code=station_code, observed_at=observed_at, **changed)
                            .returning(w.c.fid)).scalar_one()
    if any(row[k] != v for k, v in changed.items()):
        conn.execute(w.update().where(w.c.fid == row["fid"]).values(**changed))
    return row["fid"]


def reading_of(conn: Connection, fid: int):
    w = current(get_layer(LAYER))
    return conn.execute(select(w).where(w.c.fid == fid)).mappings().first()


def position_of(field: str) -> int:
    return next(i for i, f in enumerate(parameters(), start=1) if f.name == field)


def field_at(position: int) -> str | None:
    fields = parameters()
    return fields[position - 1].name if 1 <= position <= len(fields) else None


def quality_values() -> list[str]:
    return list(get_layer(LAYER).field("status").values or [])
