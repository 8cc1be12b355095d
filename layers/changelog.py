"""The change log (`twin.change`) as a Core table, and how changes, features and moments look over HTTP.

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
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB

from layers.catalog import LayerSpec, get_layer
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
    Column("before", JSONB),
    Column("after", JSONB),
    Column("geom_before", Geometry(spatial_index=False)),
    Column("geom_after", Geometry(spatial_index=False)),
    schema="twin",
)


def shift_m(before, after):
    """How far a geometry moved, in metres: the Hausdorff distance, so a reshaped polygon counts too."""
    return func.ST_HausdorffDistance(func.ST_Transform(before, METRIC_SRID), func.ST_Transform(after, METRIC_SRID))


def change_columns() -> list:
    """The change log's columns as `change_json` reads them."""
    c = change.c
    return [c.change_id, c.layer, c.fid, c.operation, c.version, c.changed_at, c.actor, c.run_id, c.before, c.after,
            c.geom_after, c.geom_before.is_distinct_from(c.geom_after).label("geom_changed"),
            shift_m(c.geom_before, c.geom_after).label("shift_m")]


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


def change_json(row) -> dict:
    spec = get_layer(row.layer)
    changed = field_changes(row.before, row.after)
    if row.geom_changed:
        changed["geometry"] = {"shift_m": None if row.shift_m is None else round(row.shift_m, 3)}
    feature = None
    if row.operation != "delete":
        feature = {"type": "Feature", "id": row.fid, "geometry": geometry_json(row.geom_after),
                   "properties": ordered(spec, row.after)}
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
