"""POST, PATCH and DELETE on entities (department keys only), and the dataArray extension."""

from contextlib import asynccontextmanager

import orjson
from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from layers.writing import write_transaction
from sensing import store
from sensing import tables as t
from sensing import water_quality as wq
from sensing.sta import bodies as b
from sensing.sta import create
from sensing.sta.entities import ENTITIES, Entity
from sensing.sta.options import Options
from sensing.sta.paths import SEGMENT
from sensing.sta.query import Reader, dump
from sensing.sta.root import PREFIX, sta_base
from twin.access import hidden_layers
from twin.auth import Principal, authenticate
from twin.errors import ApiError

router = APIRouter(tags=["sensorthings"])
MAX_DATA_ARRAY = 100_000  # observations in one CreateObservations request; more is a 413
BY_PLURAL = {e.plural: e for e in ENTITIES.values()}


@asynccontextmanager
async def _transaction(request: Request, principal: Principal):
    try:
        async with write_transaction(request, principal.actor) as conn:
            yield conn
    except DBAPIError as e:
        state = getattr(e.orig, "sqlstate", None) or ""
        message = str(getattr(e.orig, "diag", None) and e.orig.diag.message_primary or e.orig).strip()
        if state == "23503":
            raise ApiError(409, "in_use", f"Other entities still refer to this one: {message}") from None
        if state[:2] == "22" or state == "XX000":
            raise ApiError(400, "invalid_body", f"The database cannot store this: {message}", where="body") from None
        raise


def _path(path: str) -> list[tuple[Entity | str, int | None]]:
    out = []
    for segment in [s for s in path.split("/") if s]:
        match = SEGMENT.match(segment)
        if not match:
            raise ApiError(404, "not_found", f"{path}: {segment[:40]!r} is not a resource", where="path")
        out.append((match[1], int(match[2]) if match[2] is not None else None))
    return out


async def _created(request: Request, entity: Entity, key: int, status: int = 201) -> Response:
    async with request.app.state.engine.connect() as conn:
        reader = Reader(conn, sta_base(request), await hidden_layers(request))
        found, _, _ = await reader.collection(Options(entity, top=1), lambda s: [s.c.id == key], key)
    body = found[0] if found else {"@iot.id": key}
    headers = {"Location": f"{sta_base(request)}/{entity.plural}({key})"}
    return Response(dump(body), status_code=status, media_type="application/json", headers=headers)


@router.post(PREFIX + "/CreateObservations", status_code=201)
async def create_observations(request: Request, principal: Principal = Depends(authenticate)):
    """The dataArray extension: [{"Datastream": {"@iot.id": n}, "components": [...], "dataArray": [[...]]}].
    All or nothing: one bad row refuses the request (400 saying where); at most MAX_DATA_ARRAY rows (413)."""
    body = await b.read_json(request)
    if not isinstance(body, list):
        raise b.bad("body", "must be a JSON array of {Datastream, components, dataArray} objects")
    total = sum(len(item.get("dataArray") or []) for item in body if isinstance(item, dict)
                and isinstance(item.get("dataArray"), list))
    if total > MAX_DATA_ARRAY:
        raise b.bad("body", f"{total} observations; one request may carry at most {MAX_DATA_ARRAY}", 413,
                    "too_many_observations")

    def build(conn) -> list[int]:
        return store.insert_rows(conn, create.data_array_rows(conn, principal, body), principal.actor)

    async with _transaction(request, principal) as conn:
        ids = await conn.run_sync(build)
    base = sta_base(request)
    return Response(orjson.dumps([f"{base}/Observations({key})" for key in ids]), status_code=201,
                    media_type="application/json")


@router.post(PREFIX + "/{path:path}", status_code=201)
async def create_entity(request: Request, path: str, principal: Principal = Depends(authenticate)):
    """Create an entity (with inline related ones) in an entity set, or in a navigation collection such as
    /Datastreams(5)/Observations or /Things(1)/Datastreams."""
    segments = _path(path)
    body = await b.read_json(request)
    if len(segments) == 1 and segments[0][0] in BY_PLURAL and segments[0][1] is None:
        entity = BY_PLURAL[segments[0][0]]
        make = lambda conn: create.CREATORS[entity.name](conn, principal, body)  # noqa: E731
    elif (len(segments) == 2 and segments[0][1] is not None and segments[1][1] is None
          and (segments[0][0], segments[1][0]) in NESTED):
        entity, make_nested = NESTED[(segments[0][0], segments[1][0])]
        parent = segments[0][1]
        make = lambda conn: make_nested(conn, principal, body, parent)  # noqa: E731
    else:
        raise ApiError(405, "method_not_allowed", f"{path}: entities are created in an entity set or in "
                       "/Things(id)/Datastreams, /Things(id)/Locations, /Datastreams(id)/Observations", where="path")
    async with _transaction(request, principal) as conn:
        key = await conn.run_sync(make)
    return await _created(request, entity, key)


def _thing_datastream(conn, p, body, thing_id):
    create.thing(conn, p, {"@iot.id": thing_id}, "path")
    return create.datastream(conn, p, body, thing_id=thing_id)


def _thing_location(conn, p, body, thing_id):
    create.thing(conn, p, {"@iot.id": thing_id}, "path")
    key = create.location(conn, p, body)
    conn.execute(t.thing_location.delete().where(t.thing_location.c.thing_id == thing_id))
    create.link_locations(conn, thing_id, [key])
    return key


def _datastream_observation(conn, p, body, datastream_id):
    create.stream_of(conn, p, datastream_id, "path")
    return create.observation(conn, p, body, datastream_id=datastream_id)


NESTED = {("Things", "Datastreams"): (ENTITIES["Datastream"], _thing_datastream),
          ("Things", "Locations"): (ENTITIES["Location"], _thing_location),
          ("Datastreams", "Observations"): (ENTITIES["Observation"], _datastream_observation)}


def _single(path: str) -> tuple[Entity, int]:
    segments = _path(path)
    if len(segments) != 1 or segments[0][0] not in BY_PLURAL or segments[0][1] is None:
        raise ApiError(405, "method_not_allowed", f"{path}: PATCH and DELETE take one entity, e.g. /Things(1)",
                       where="path")
    return BY_PLURAL[segments[0][0]], segments[0][1]


def _missing(entity: Entity, key: int) -> ApiError:
    return ApiError(404, "not_found", f"There is no {entity.name} with @iot.id {key}", where="path")


def _owner(conn, entity: Entity, key: int):
    """(row, department) of the entity, or a 404."""
    if entity.name == "Observation":
        if key < 0:
            return _reading(conn, key)
        row = conn.execute(select(t.observation).where(t.observation.c.id == key)).mappings().first()
        if row is None:
            raise _missing(entity, key)
        return row, conn.execute(select(t.datastream.c.department)
                                 .where(t.datastream.c.id == row["datastream_id"])).scalar()
    if entity.name == "HistoricalLocation":
        row = conn.execute(select(t.historical_location).where(t.historical_location.c.id == key)).mappings().first()
        if row is None:
            raise _missing(entity, key)
        return row, conn.execute(select(t.thing.c.department).where(t.thing.c.id == row["thing_id"])).scalar()
    row = conn.execute(select(entity.table).where(entity.table.c.id == key)).mappings().first()
    if row is None:
        raise _missing(entity, key)
    return row, row["department"]


def _reading(conn, key: int):
    fid, position = wq.split_id(key)
    field, reading = wq.field_at(position), wq.reading_of(conn, fid)
    if field is None or reading is None or reading[field] is None:
        raise _missing(ENTITIES["Observation"], key)
    stream = conn.execute(select(t.datastream).join(t.thing, t.thing.c.id == t.datastream.c.thing_id)
                          .where(t.thing.c.station_code == reading["station_code"], t.datastream.c.wq_field == field)
                          ).mappings().first()
    if stream is None:
        raise _missing(ENTITIES["Observation"], key)
    return dict(reading) | {"_field": field, "_stream": stream}, stream["department"]


def _derived(entity: Entity, row) -> bool:
    return (entity.name in ("Thing", "Location") and row.get("station_code") is not None) or (
        entity.name == "Datastream" and row.get("wq_field") is not None)


SIMPLE = {"name", "description", "encodingType", "metadata", "definition", "resultQuality"}


def _changes(conn, p: Principal, entity: Entity, row, body: dict) -> dict:
    values = {}
    for name, value in body.items():
        column = entity.properties.get(name)
        where = f"body.{name}"
        if column is None or name == "id":
            raise b.bad(where, f"is not a property of {entity.name} that can be changed")
        if name in SIMPLE:
            values[column] = b.text(body, name, "body", required=name != "resultQuality")
        elif column in ("properties",):
            values[column] = b.json_object(body, name, "body")
        elif name == "unitOfMeasurement":
            values[column] = create.unit(body, "body")
        elif name == "observationType":
            values[column] = create.observation_type(body, "body")
        elif column in entity.geometries:
            values[column] = create._geom(b.geometry(value, where))
        elif name == "time":
            values[column] = b.instant(value, where)
        elif name == "result":
            stream = conn.execute(select(t.datastream.c.observation_type)
                                  .where(t.datastream.c.id == row["datastream_id"])).scalar()
            values[column] = b.result(value, stream, where)
        elif name == "phenomenonTime":
            values["phenomenon_time"], values["phenomenon_time_end"] = b.phenomenon_time(value, where)
        elif name == "resultTime":
            values[column] = b.instant(value, where) if value is not None else None
    return values


@router.patch(PREFIX + "/{path:path}")
async def update_entity(request: Request, path: str, principal: Principal = Depends(authenticate)):
    """Change some properties of an entity (a JSON merge of the properties given)."""
    entity, key = _single(path)
    body = b.obj(await b.read_json(request), "body")

    def update(conn):
        row, department = _owner(conn, entity, key)
        create.check_department(principal, department, f"{entity.name} {key}")
        if entity.name == "Observation" and key < 0:
            return _update_reading(conn, principal, row, body)
        values = _changes(conn, principal, entity, row, body)
        if values:
            table = t.observation if entity.name == "Observation" else entity.table
            conn.execute(table.update().where(table.c.id == key).values(**values))
        return key

    async with _transaction(request, principal) as conn:
        key = await conn.run_sync(update)
    return await _created(request, entity, key, 200)


def _update_reading(conn, p: Principal, row, body: dict) -> int:
    extra = set(body) - {"result", "resultQuality"}
    if extra:
        raise b.bad(f"body.{sorted(extra)[0]}", "a water-quality reading changes its result and resultQuality only")
    stream = row["_stream"]
    value = b.result(body["result"], stream["observation_type"], "body.result") if "result" in body else row[row["_field"]]
    quality = body.get("resultQuality")
    create.check_water_quality(stream, value, quality, None, "body")
    wq.write_reading(conn, p.actor, row["station_code"], row["observed_at"], {row["_field"]: value}, quality)
    return -(row["fid"] * wq.STRIDE + wq.position_of(row["_field"]))


@router.delete(PREFIX + "/{path:path}", status_code=204)
async def delete_entity(request: Request, path: str, principal: Principal = Depends(authenticate)):
    """Delete an entity (and, as SensorThings says, what cannot exist without it)."""
    entity, key = _single(path)

    def delete(conn):
        row, department = _owner(conn, entity, key)
        create.check_department(principal, department, f"{entity.name} {key}")
        if _derived(entity, row):
            raise ApiError(409, "derived_entity", f"{entity.name} {key} mirrors the monitoring_stations layer; "
                           "change the station there (/collections/monitoring_stations/items)")
        if entity.name == "Observation" and key < 0:
            wq.write_reading(conn, principal.actor, row["station_code"], row["observed_at"], {row["_field"]: None},
                             None)
            return
        table = t.observation if entity.name == "Observation" else entity.table
        if entity.name == "Datastream":
            conn.execute(t.observation.delete().where(t.observation.c.datastream_id == key))
        if entity.name == "Thing":  # observations have no foreign key (partitioned): their streams go with it
            streams = select(t.datastream.c.id).where(t.datastream.c.thing_id == key)
            conn.execute(t.observation.delete().where(t.observation.c.datastream_id.in_(streams)))
        conn.execute(table.delete().where(table.c.id == key))

    async with _transaction(request, principal) as conn:
        await conn.run_sync(delete)
    return Response(status_code=204)
