"""Features arriving over HTTP: the JSON body, GeoJSON geometry, its CRS, and validation into column values.

Validation is the ETL's own (`layers.validate.validate` on a one-row frame), so a feature
the API accepts is one a file load would accept, with the same reasons when it is not.
"""

import math
from datetime import datetime

import numpy as np
import orjson
import pandas as pd
import pyproj
import shapely
from fastapi import Request
from shapely.geometry import shape

from layers import crs as crs_
from layers.catalog import SRID, LayerSpec
from layers.validate import validate
from twin.errors import ApiError

MAX_BODY = 16 * 1024 * 1024
MAX_TEXT = 10_000
MAX_VERTICES = 100_000  # the district's most detailed boundary has 580; validation time grows with vertices
# Nesting of GeoJSON coordinates: positions are depth 0.
DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


async def read_json(request: Request) -> object:
    """The request body as JSON, refused early when it is too large."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"The body is {int(declared)} bytes; a feature may be at most "
                       f"{MAX_BODY} bytes.", where="body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "body_too_large", f"A feature may be at most {MAX_BODY} bytes.", where="body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "invalid_json", "The body is empty; send a GeoJSON Feature.", where="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {e}", where="body") from None


def input_crs(header: str | None, param: str | None) -> crs_.Crs:
    """The CRS of the body's coordinates: the crs parameter, else the Content-Crs header, else CRS84.
    As in OGC API Features Part 2, coordinates follow the CRS's axis order (EPSG:4326 and EPSG:4490 are lat, lon)."""
    if param is not None:
        return crs_.parse(param, "query.crs")
    if header is not None:
        return crs_.parse(header.strip().removeprefix("<").removesuffix(">"), "header.Content-Crs")
    return crs_.DEFAULT


def _to_storage(geom, crs: crs_.Crs):
    if crs.northing_first:
        geom = shapely.transform(geom, lambda xy: xy[:, ::-1])
    if crs.srid in (SRID, 4326):  # WGS84 and CGCS2000 agree to centimetres: coordinates are kept as given
        return geom
    transformer = pyproj.Transformer.from_crs(crs.srid, SRID, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _check_positions(value, depth: int, where: str) -> None:
    if not isinstance(value, list):
        raise ApiError(400, "invalid_geometry", "coordinates must be nested arrays of numbers", where=where)
    if depth == 0:
        if len(value) not in (2, 3) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in value):
            raise ApiError(400, "invalid_geometry", f"a position is [x, y] (or [x, y, z]) of numbers, not "
                           f"{orjson.dumps(value)[:60].decode(errors='replace')}", where=where)
        return
    for n, item in enumerate(value):
        _check_positions(item, depth - 1, f"{where}[{n}]")


def _count_positions(value, depth: int) -> int:
    """Positions in GeoJSON coordinates of that nesting, counted before anything is checked one by one."""
    if not isinstance(value, list):
        return 0
    if depth <= 1:
        return len(value) if depth == 1 else 1
    return sum(_count_positions(item, depth - 1) for item in value)


def parse_geometry(value, crs: crs_.Crs, where: str = "geometry"):
    """A GeoJSON geometry object as a 2D shapely geometry in the storage CRS (None for JSON null)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ApiError(400, "invalid_geometry", "geometry must be a GeoJSON geometry object with a type", where=where)
    kind = value["type"]
    if kind not in DEPTH:
        raise ApiError(422, "wrong_geometry_type", f"geometry type {kind[:40]!r} is not one a layer holds "
                       f"({', '.join(DEPTH)})", where=f"{where}.type")
    vertices = _count_positions(value.get("coordinates"), DEPTH[kind])
    if vertices > MAX_VERTICES:
        raise ApiError(413, "geometry_too_large", f"The geometry has {vertices} vertices; a feature may have at most "
                       f"{MAX_VERTICES}. Simplify it first.", where=f"{where}.coordinates")
    _check_positions(value.get("coordinates"), DEPTH[kind], f"{where}.coordinates")
    try:
        geom = shapely.force_2d(shape(value))
    except (ValueError, TypeError, shapely.errors.GEOSException) as e:
        raise ApiError(400, "invalid_geometry", f"cannot build a {kind}: {e}", where=where) from None
    return geom if geom.is_empty else _to_storage(geom, crs)


def check_properties(spec: LayerSpec, value, where: str = "properties") -> dict:
    """A properties object of known fields with scalar values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_feature", "properties must be a JSON object", where=where)
    known = {f.name for f in spec.fields}
    for name, item in value.items():
        if name not in known:
            raise ApiError(422, "unknown_property", f"layer '{spec.id}' has no field {name[:60]!r}; its fields: "
                           f"{', '.join(f.name for f in spec.fields)}", where=f"{where}.{name[:60]}")
        if isinstance(item, (dict, list)):
            raise ApiError(422, "invalid_value", f"{name} must be a string, number, boolean or null",
                           where=f"{where}.{name}")
        if isinstance(item, str) and (len(item) > MAX_TEXT or "\x00" in item):
            raise ApiError(422, "invalid_value", f"{name} is longer than {MAX_TEXT} characters or holds a NUL "
                           "character", where=f"{where}.{name}")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > 2**53:
            raise ApiError(422, "invalid_value", f"{name} is too large a number", where=f"{where}.{name}")
    return value


def parse_feature(spec: LayerSpec, body, crs: crs_.Crs) -> tuple[dict, object]:
    """(properties, geometry) of a GeoJSON Feature body."""
    if not isinstance(body, dict) or body.get("type") != "Feature":
        raise ApiError(400, "invalid_feature", "The body must be a GeoJSON Feature: "
                       '{"type": "Feature", "geometry": {...}, "properties": {...}}', where="body.type")
    geometry = parse_geometry(body.get("geometry"), crs)
    if geometry is not None and not spec.geometry:
        raise ApiError(422, "unexpected_geometry", f"layer '{spec.id}' holds records without geometry; "
                       "send geometry: null", where="geometry")
    return check_properties(spec, body.get("properties")), geometry


def _where(spec: LayerSpec, reason: str) -> str:
    if reason.startswith("geometry"):
        return "geometry"
    field = next((f for f in spec.fields if reason.startswith(f"{f.zh} ({f.name})")), None)
    return f"properties.{field.name}" if field else "properties"


def _plain(value, kind: str):
    """A pandas/numpy scalar as the Python value the driver binds."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if kind == "integer":
        return int(value)
    if kind == "real":
        return float(value)
    if kind == "boolean":
        return bool(value)
    if kind == "timestamptz":
        return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    if kind == "date" and isinstance(value, datetime):
        return value.date()
    return value


def validated_values(spec: LayerSpec, properties: dict, geometry) -> dict:
    """Column values for the feature, or a 422 with the validator's reason."""
    frame = pd.DataFrame([{f.name: properties.get(f.name) for f in spec.fields}], dtype=object)
    checked = validate(spec, frame, pd.Series([geometry], dtype=object) if spec.geometry else None)
    if checked.rejects:
        reason = next(iter(checked.rejects.values()))
        raise ApiError(422, "invalid_feature", reason, where=_where(spec, reason))
    row = checked.frame.iloc[0]
    values = {f.name: _plain(row[f.name], f.type) for f in spec.fields}
    if spec.geometry:
        values["geom"] = row["geom"]
    return values
