"""Creating entities, inline ones too (deep insert), in the caller's transaction; every check says where.

A key creates Things, Locations, Sensors, ObservedProperties and FeaturesOfInterest of its department,
and Datastreams, Observations and HistoricalLocations only under Things of its department (403 otherwise).
"""

from datetime import datetime, timezone

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from layers.catalog import SRID, get_layer
from sensing import store
from sensing import tables as t
from sensing import water_quality as wq
from sensing.sta import bodies as b
from sensing.sta import columns
from twin.auth import Principal
from twin.errors import ApiError


def forbidden(principal: Principal, department: str, what: str) -> ApiError:
    return ApiError(403, "forbidden_department", f"{what} belongs to {department}: the key of "
                    f"{principal.department} may not write it.")


def check_department(principal: Principal, department: str, what: str) -> None:
    if not principal.is_admin and principal.department != department:
        raise forbidden(principal, department, what)


def _must_exist(conn: Connection, table, key: int, where: str, kind: str):
    row = conn.execute(select(table).where(table.c.id == key)).mappings().first()
    if row is None:
        raise b.bad(where, f"there is no {kind} with @iot.id {key}")
    return row


def _geom(json_text: str):
    return func.ST_SetSRID(func.ST_GeomFromGeoJSON(json_text), SRID)


def _named(body: dict, where: str) -> dict:
    return {"name": b.text(body, "name", where), "description": b.text(body, "description", where, default=""),
            "properties": b.json_object(body, "properties", where)}


def _insert(conn: Connection, table, values: dict) -> int:
    return conn.execute(table.insert().values(**values).returning(table.c.id)).scalar_one()


def thing(conn, p: Principal, body, where="body") -> int:
    body = b.obj(body, where)
    if "@iot.id" in body:
        key = b.reference(body, where)
        row = _must_exist(conn, t.thing, key, where, "Thing")
        check_department(p, row["department"], f"Thing {key}")
        return key
    key = _insert(conn, t.thing, _named(body, where) | {"department": p.department})
    locations = [location(conn, p, item, f"{where}.Locations[{i}]") for i, item in enumerate(_list(body, "Locations", where))]
    link_locations(conn, key, locations)
    for i, item in enumerate(_list(body, "Datastreams", where)):
        datastream(conn, p, item, f"{where}.Datastreams[{i}]", thing_id=key)
    return key


def link_locations(conn, thing_id: int, locations: list[int]) -> None:
    if not locations:
        return
    for key in locations:
        conn.execute(t.thing_location.insert().values(thing_id=thing_id, location_id=key))
    history = _insert(conn, t.historical_location, {"thing_id": thing_id, "time": func.now()})
    for key in locations:
        conn.execute(t.historical_location_location.insert().values(historical_location_id=history, location_id=key))


def _referenced(conn, table, body: dict, where: str, name: str) -> int | None:
    """The id of the existing entity `body` names by @iot.id (404 if there is none), or None for a new one."""
    key = b.reference(body, where)
    if key is not None:
        _must_exist(conn, table, key, where, name)
    return key


def _list(body: dict, name: str, where: str) -> list:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise b.bad(f"{where}.{name}", "must be a JSON array")
    return value


def location(conn, p: Principal, body, where="body") -> int:
    body = b.obj(body, where)
    if (key := _referenced(conn, t.location, body, where, "Location")) is not None:
        return key
    values = _named(body, where) | {"encoding_type": b.text(body, "encodingType", where),
                                    "geom": _geom(b.geometry(body.get("location"), f"{where}.location")),
                                    "department": p.department}
    key = _insert(conn, t.location, values)
    for i, item in enumerate(_list(body, "Things", where)):
        owner = thing(conn, p, item, f"{where}.Things[{i}]")
        conn.execute(t.thing_location.delete().where(t.thing_location.c.thing_id == owner))
        link_locations(conn, owner, [key])
    return key


def sensor(conn, p: Principal, body, where="body") -> int:
    body = b.obj(body, where)
    if (key := _referenced(conn, t.sensor, body, where, "Sensor")) is not None:
        return key
    return _insert(conn, t.sensor, _named(body, where) | {
        "encoding_type": b.text(body, "encodingType", where), "metadata": _metadata(body, where),
        "department": p.department})


def _metadata(body: dict, where: str) -> str:
    value = body.get("metadata")
    if value is None:
        raise b.bad(f"{where}.metadata", "is required")
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def observed_property(conn, p: Principal, body, where="body") -> int:
    body = b.obj(body, where)
    if (key := _referenced(conn, t.observed_property, body, where, "ObservedProperty")) is not None:
        return key
    definition = b.text(body, "definition", where)
    # the definition names the property: a second one with the same definition is the first
    known = conn.execute(select(t.observed_property.c.id).where(t.observed_property.c.definition == definition)).scalar()
    if known is not None:
        return known
    return _insert(conn, t.observed_property, _named(body, where) | {"definition": definition,
                                                                     "department": p.department})


def feature_of_interest(conn, p: Principal, body, where="body") -> int:
    body = b.obj(body, where)
    if (key := _referenced(conn, t.feature_of_interest, body, where, "FeatureOfInterest")) is not None:
        return key
    return _insert(conn, t.feature_of_interest, _named(body, where) | {
        "encoding_type": b.text(body, "encodingType", where),
        "feature": _geom(b.geometry(body.get("feature"), f"{where}.feature")), "department": p.department})


def unit(body: dict, where: str) -> dict:
    value = b.obj(body.get("unitOfMeasurement"), f"{where}.unitOfMeasurement")
    for name in ("name", "symbol", "definition"):
        if value.get(name) is not None and not isinstance(value[name], str):
            raise b.bad(f"{where}.unitOfMeasurement.{name}", "must be a string")
    return {k: value.get(k) for k in ("name", "symbol", "definition")}


def observation_type(body: dict, where: str) -> str:
    kind = b.text(body, "observationType", where)
    if kind not in b.OBSERVATION_TYPES:
        raise b.bad(f"{where}.observationType", f"must be one of {', '.join(b.OBSERVATION_TYPES)} "
                    "(this store keeps numeric results)")
    return kind


def datastream(conn, p: Principal, body, where="body", thing_id: int | None = None) -> int:
    body = b.obj(body, where)
    key = b.reference(body, where)
    if key is not None:
        row = _must_exist(conn, t.datastream, key, where, "Datastream")
        check_department(p, row["department"], f"Datastream {key}")
        return key
    values = _named(body, where) | {"unit_of_measurement": unit(body, where),
                                    "observation_type": observation_type(body, where)}
    if thing_id is None:
        if "Thing" not in body:
            raise b.bad(f"{where}.Thing", "is required (a reference {\"@iot.id\": n} or a new Thing)")
        thing_id = thing(conn, p, body["Thing"], f"{where}.Thing")
    owner = conn.execute(select(t.thing.c.department).where(t.thing.c.id == thing_id)).scalar_one()
    check_department(p, owner, f"Thing {thing_id}")
    for name in ("Sensor", "ObservedProperty"):
        if name not in body:
            raise b.bad(f"{where}.{name}", "is required (a reference {\"@iot.id\": n} or a new one)")
    values |= {"thing_id": thing_id, "sensor_id": sensor(conn, p, body["Sensor"], f"{where}.Sensor"),
               "observed_property_id": observed_property(conn, p, body["ObservedProperty"],
                                                          f"{where}.ObservedProperty"),
               "department": owner}
    if body.get("observedArea") is not None:
        values["observed_area"] = _geom(b.geometry(body["observedArea"], f"{where}.observedArea"))
    key = _insert(conn, t.datastream, values)
    rows = [observation_row(conn, p, item, f"{where}.Observations[{i}]", key)
            for i, item in enumerate(_list(body, "Observations", where))]
    store.insert_rows(conn, rows, p.actor)
    return key


def stream_of(conn, p: Principal, key: int, where: str):
    row = conn.execute(select(t.datastream).where(t.datastream.c.id == key)).mappings().first()
    if row is None:
        raise b.bad(where, f"there is no Datastream with @iot.id {key}")
    check_department(p, row["department"], f"Datastream {key}")
    return row


def default_feature(conn, p: Principal, stream) -> int | None:
    """The FeatureOfInterest of an observation that names none: the one made from its Thing's Location."""
    located = conn.execute(select(t.location).join(t.thing_location, t.thing_location.c.location_id == t.location.c.id)
                           .where(t.thing_location.c.thing_id == stream["thing_id"]).limit(1)).mappings().first()
    if located is None:
        return None
    found = conn.execute(select(t.feature_of_interest.c.id)
                         .where(t.feature_of_interest.c.location_id == located["id"])).scalar()
    if found is None:
        found = _insert(conn, t.feature_of_interest, {
            "name": located["name"], "description": located["description"], "encoding_type": "application/geo+json",
            "feature": located["geom"], "department": stream["department"], "location_id": located["id"]})
    return found


def observation_row(conn, p: Principal, body, where: str, datastream_id: int | None = None,
                    streams: dict | None = None, now: datetime | None = None) -> store.ObservationRow:
    body = b.obj(body, where)
    if datastream_id is None:
        if "Datastream" not in body:
            raise b.bad(f"{where}.Datastream", "is required (a reference {\"@iot.id\": n})")
        datastream_id = b.reference(body["Datastream"], f"{where}.Datastream")
        if datastream_id is None:
            raise b.bad(f"{where}.Datastream", "must reference an existing Datastream by @iot.id")
    streams = streams if streams is not None else {}
    if datastream_id not in streams:
        streams[datastream_id] = stream_of(conn, p, datastream_id, f"{where}.Datastream")
    stream = streams[datastream_id]
    if "result" not in body:
        raise b.bad(f"{where}.result", "is required")
    value = b.result(body["result"], stream["observation_type"], f"{where}.result")
    start, end = b.phenomenon_time(body.get("phenomenonTime"), f"{where}.phenomenonTime", now)
    result_time = b.instant(body["resultTime"], f"{where}.resultTime") if body.get("resultTime") else None
    quality = body.get("resultQuality")
    if quality is not None and (not isinstance(quality, str) or len(quality) > b.LONGEST_QUALITY):
        raise b.bad(f"{where}.resultQuality", "must be a short string (a station or device status)")
    if stream["wq_field"] is not None:
        check_water_quality(stream, value, quality, end, where)
        return store.ObservationRow(datastream_id, start, value, quality, result_time)
    if body.get("FeatureOfInterest") is not None:
        feature = feature_of_interest(conn, p, body["FeatureOfInterest"], f"{where}.FeatureOfInterest")
    elif "_feature" in stream:  # found before, perhaps None (a Thing without a Location): not looked for again
        feature = stream["_feature"]
    else:
        feature = default_feature(conn, p, stream)
        streams[datastream_id] = dict(stream) | {"_feature": feature}
    return store.ObservationRow(datastream_id, start, value, quality, result_time, end, feature)


DATA_ARRAY_COMPONENTS = ("phenomenonTime", "result", "resultTime", "resultQuality", "FeatureOfInterest/id")


def data_array_rows(conn, p: Principal, body: list) -> list[store.ObservationRow]:
    """The rows of a CreateObservations body ([{"Datastream", "components", "dataArray"}]): an item checked column
    by column (sensing.sta.columns), or row by row as observation_row checks one when that is not sure of it (so
    a refusal says where as before). Its Datastreams are read in one query and the default FeatureOfInterest
    found once per Thing, not per Datastream (a request of 100 Datastreams made 300 queries before)."""
    items = []
    for i, item in enumerate(body):
        where = f"body[{i}]"
        item = b.obj(item, where)
        components = item.get("components")
        if not isinstance(components, list) or "result" not in components or not all(
                c in DATA_ARRAY_COMPONENTS for c in components):
            raise b.bad(f"{where}.components", "must list result and any of " + ", ".join(
                c for c in DATA_ARRAY_COMPONENTS if c != "result"))
        stream = b.reference(item.get("Datastream") or {}, f"{where}.Datastream")
        if stream is None:
            raise b.bad(f"{where}.Datastream", "must reference a Datastream by @iot.id")
        values = item.get("dataArray")
        if not isinstance(values, list):
            raise b.bad(f"{where}.dataArray", "must be an array of arrays")
        items.append((where, components, stream, values))
    streams = {row["id"]: row for row in conn.execute(select(t.datastream).where(
        t.datastream.c.id.in_({stream for _, _, stream, values in items if values}))).mappings()}
    features: dict[int, int | None] = {}
    rows, now = [], datetime.now(timezone.utc)
    for where, components, stream, values in items:
        if values and stream in streams:  # one missing is refused by observation_row at the first row
            check_department(p, streams[stream]["department"], f"Datastream {stream}")
            if streams[stream]["wq_field"] is None and "FeatureOfInterest/id" not in components \
                    and "_feature" not in streams[stream]:
                owner = streams[stream]["thing_id"]
                if owner not in features:
                    features[owner] = default_feature(conn, p, streams[stream])
                streams[stream] = dict(streams[stream]) | {"_feature": features[owner]}
        checked = columns.item_rows(streams[stream], components, values, now) if values and stream in streams else None
        if checked is not None:
            rows.extend(checked)
            continue
        for j, value in enumerate(values):
            if not isinstance(value, list) or len(value) != len(components):
                raise b.bad(f"{where}.dataArray[{j}]", f"must be an array of {len(components)} values")
            entry = dict(zip(components, value))
            if "FeatureOfInterest/id" in entry:
                entry["FeatureOfInterest"] = {"@iot.id": entry.pop("FeatureOfInterest/id")}
            rows.append(observation_row(conn, p, entry, f"{where}.dataArray[{j}]", stream, streams, now))
    return rows


def check_water_quality(stream, value: float, quality: str | None, end, where: str) -> None:
    field = get_layer(wq.LAYER).field(stream["wq_field"])
    if end is not None:
        raise b.bad(f"{where}.phenomenonTime", "a water-quality reading is at an instant, not an interval")
    if (field.min is not None and value < field.min) or (field.max is not None and value > field.max):
        raise b.bad(f"{where}.result", f"{value} is outside {field.zh} ({field.name})'s range "
                    f"{field.min}..{field.max}")
    if quality is not None and quality not in wq.quality_values():
        raise b.bad(f"{where}.resultQuality", f"a water-quality reading's status is one of "
                    f"{', '.join(wq.quality_values())}")


def historical_location(conn, p: Principal, body, where="body") -> int:
    body = b.obj(body, where)
    if "Thing" not in body:
        raise b.bad(f"{where}.Thing", "is required")
    owner = thing(conn, p, body["Thing"], f"{where}.Thing")
    moment = b.instant(body.get("time"), f"{where}.time")
    key = _insert(conn, t.historical_location, {"thing_id": owner, "time": moment})
    for i, item in enumerate(_list(body, "Locations", where)):
        place = location(conn, p, item, f"{where}.Locations[{i}]")
        conn.execute(t.historical_location_location.insert().values(historical_location_id=key, location_id=place))
    return key


def observation(conn, p: Principal, body, where="body", datastream_id: int | None = None) -> int:
    row = observation_row(conn, p, body, where, datastream_id)
    return store.insert_rows(conn, [row], p.actor)[0]


CREATORS = {"Thing": thing, "Location": location, "Sensor": sensor, "ObservedProperty": observed_property,
            "FeatureOfInterest": feature_of_interest, "Datastream": datastream, "Observation": observation,
            "HistoricalLocation": historical_location}
