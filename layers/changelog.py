"""The change log (`twin.change`) as a Core table, and how changes, features and moments look over HTTP.

A change row is lean (migration 0007): who wrote which version of a feature, when, and the envelopes of
its geometry before and after. What a version held is read from the versions themselves: version v of
a feature is its current row if that has version v, else its `history.<layer>` row (fid, v); what came
before an update or a delete is history version v - 1.

Geometries leave as GeoJSON built from WKB with Python floats (shortest round-trip repr),
so a client that replays the change feed gets the stored coordinates bit for bit.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import shapely
from fastapi import Response
from geoalchemy2 import Geometry
from shapely.geometry import mapping
from sqlalchemy import (ARRAY, BigInteger, Column, DateTime, Integer, MetaData, Table, Text, and_, any_, bindparam,
                        case, cast, func, literal, null, select, union_all)
from sqlalchemy.dialects.postgresql import JSONB

from layers.catalog import LayerSpec, get_layer
from layers.tables import current, history
from twin.errors import ApiError

METRIC_SRID = 4549  # CGCS2000 3° Gauss-Krüger, CM 120E: metres across the whole district
LOCAL_TIME = ZoneInfo("Asia/Shanghai")  # a moment without an offset is Beijing time, the district's clock

change = Table(
    "change", MetaData(),
    Column("change_id", BigInteger, primary_key=True),
    Column("layer", Text),
    Column("fid", BigInteger),
    Column("operation", Text),
    Column("version", Integer),
    Column("changed_at", DateTime(timezone=True)),
    Column("actor", Text),
    Column("run_id", BigInteger),
    Column("bbox_before", Geometry(spatial_index=False)),
    Column("bbox_after", Geometry(spatial_index=False)),
    schema="twin",
)
JSONB_PAIRS = 50  # jsonb_build_object takes at most 100 arguments


def shift_m(before, after):
    """How far a geometry moved, in metres: the Hausdorff distance, so a reshaped polygon counts too."""
    return func.ST_HausdorffDistance(func.ST_Transform(before, METRIC_SRID), func.ST_Transform(after, METRIC_SRID))


def change_columns() -> list:
    """The change log's own columns, as `change_json` reads them (with `content` for the rest)."""
    c = change.c
    return [c.change_id, c.layer, c.fid, c.operation, c.version, c.changed_at, c.actor, c.run_id]


def versions(spec: LayerSpec):
    """Every version the layer's features have had: the current rows and the superseded ones."""
    layer, past = current(spec), history(spec)
    return union_all(select(layer), select(*(past.c[c.name] for c in layer.columns))).subquery(f"{spec.id}_versions")


def _properties(spec: LayerSpec, row):
    """The row's fields as jsonb, as migration 0003 stored them; NULL when there is no row."""
    pairs = [part for f in spec.fields for part in (cast(literal(f.name), Text), row.c[f.name])]
    chunks = [func.jsonb_build_object(*pairs[i:i + 2 * JSONB_PAIRS]) for i in range(0, len(pairs), 2 * JSONB_PAIRS)]
    built = chunks[0] if chunks else cast(literal("{}"), JSONB)
    for chunk in chunks[1:]:
        built = built.op("||")(chunk)
    return case((row.c.fid.is_(None), null()), else_=built)


def change_content(spec: LayerSpec, change_ids: list[int]):
    """Per change id of the layer: the properties before and after, the geometry after, and the move."""
    c = change.c
    after, before = versions(spec).alias("after"), history(spec).alias("before")
    joined = (change.outerjoin(after, and_(after.c.fid == c.fid, after.c.version == c.version,
                                           c.operation != "delete"))
              .outerjoin(before, and_(before.c.fid == c.fid, before.c.version == c.version - 1,
                                      c.operation != "insert")))
    geometry = [func.ST_AsBinary(after.c.geom).label("geom_after"),
                before.c.geom.is_distinct_from(after.c.geom).label("geom_changed"),
                shift_m(before.c.geom, after.c.geom).label("shift_m")] if spec.geometry else \
        [null().label("geom_after"), literal(False).label("geom_changed"), null().label("shift_m")]
    ids = bindparam("ids", change_ids, type_=ARRAY(BigInteger))
    return (select(c.change_id, _properties(spec, before).label("before"), _properties(spec, after).label("after"),
                   *geometry)
            .select_from(joined).where(c.change_id == any_(ids)))


async def with_content(conn, rows: list) -> list[tuple]:
    """(change row, its content) for each of `rows`, one query per layer among them."""
    ids: dict[str, list[int]] = {}
    for row in rows:
        ids.setdefault(row.layer, []).append(row.change_id)
    content = {}
    for layer, change_ids in ids.items():
        for found in (await conn.execute(change_content(get_layer(layer), change_ids))).all():
            content[found.change_id] = found
    return [(row, content[row.change_id]) for row in rows]


def geometry_json(wkb) -> dict | None:
    if wkb is None:
        return None
    return mapping(shapely.from_wkb(bytes(getattr(wkb, "data", wkb))))


def ordered(spec: LayerSpec | None, properties: dict) -> dict:
    """Properties in the spec's field order (jsonb keeps its own order)."""
    if spec is None:
        return properties
    return {f.name: properties.get(f.name) for f in spec.fields}


def feature_json(spec: LayerSpec, row) -> dict:
    """A current or past row of a layer as a GeoJSON Feature."""
    values = row._mapping
    return {"type": "Feature", "id": values["fid"],
            "geometry": geometry_json(values["geom"]) if spec.geometry else None,
            "properties": {f.name: values[f.name] for f in spec.fields}}


def field_changes(before: dict | None, after: dict | None) -> dict:
    before, after = before or {}, after or {}
    return {name: {"from": before.get(name), "to": after.get(name)}
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)}


def change_json(row, content) -> dict:
    """A change row with its `content` (see `with_content`) as the history API shows it."""
    spec = get_layer(row.layer)
    changed = field_changes(content.before, content.after)
    if content.geom_changed:
        changed["geometry"] = {"shift_m": None if content.shift_m is None else round(content.shift_m, 3)}
    feature = None
    if row.operation != "delete":
        feature = {"type": "Feature", "id": row.fid, "geometry": geometry_json(content.geom_after),
                   "properties": ordered(spec, content.after)}
    return {"id": row.change_id, "layer": row.layer, "fid": row.fid, "operation": row.operation,
            "version": row.version, "time": row.changed_at, "actor": row.actor, "run": row.run_id,
            "changed": changed, "feature": feature}


def json_response(body, status: int = 200, headers: dict | None = None,
                  media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=media_type)


def parse_moment(text: str | None, where: str) -> datetime | None:
    """An ISO 8601 moment; without an offset it is Beijing time."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{text[:60]!r} is not an ISO 8601 moment "
                       "(e.g. 2024-05-01T08:00:00+08:00 or 2024-05-01T00:00:00Z)", where=where) from None
    if not 1900 <= moment.year <= 2200:
        raise ApiError(400, "invalid_parameter", f"{text[:60]!r} is outside the years 1900–2200", where=where)
    return moment if moment.tzinfo else moment.replace(tzinfo=LOCAL_TIME)
