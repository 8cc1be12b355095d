"""Checking SensorThings request bodies: types, times, geometries and results, each refusal saying where."""

import math
from datetime import datetime, timedelta, timezone

import orjson
from fastapi import Request

from twin.errors import ApiError

MAX_BODY = 64 << 20  # bytes of one request body (a dataArray of about half a million observations)
FUTURE = timedelta(days=1)  # a phenomenonTime later than this from now is refused
LONGEST_QUALITY = 64  # characters of a resultQuality (a station or device status)
OBSERVATION_TYPES = {  # results are stored as numbers: these types only
    "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement": "number",
    "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CountObservation": "integer",
}


def bad(where: str, detail: str, status: int = 400, code: str = "invalid_body") -> ApiError:
    return ApiError(status, code, f"{where}: {detail}", where=where)


async def read_json(request: Request):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise bad("body", f"{int(declared)} bytes is more than the {MAX_BODY} a request may send", 413,
                  "body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise bad("body", f"more than the {MAX_BODY} bytes a request may send", 413, "body_too_large")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        raise bad("body", f"not valid JSON: {e}", code="invalid_json") from None


def obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise bad(where, "must be a JSON object")
    return value


def text(body: dict, name: str, where: str, required: bool = True, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is None:
        if required:
            raise bad(f"{where}.{name}", "is required")
        return None
    if not isinstance(value, str):
        raise bad(f"{where}.{name}", "must be a string")
    if "\x00" in value:
        raise bad(f"{where}.{name}", "must not hold a NUL character")
    return value


def json_object(body: dict, name: str, where: str) -> dict | None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise bad(f"{where}.{name}", "must be a JSON object")
    return value


def parse_time(value: str) -> datetime:
    """An ISO 8601 time as this API reads one (ValueError if it is none); its zone is the caller's to check."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def instant(value, where: str) -> datetime:
    if not isinstance(value, str):
        raise bad(where, "must be an ISO 8601 time, e.g. 2024-05-01T08:00:00+08:00")
    try:
        moment = parse_time(value)
    except ValueError:
        raise bad(where, f"{value[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise bad(where, f"{value[:40]!r} has no time zone (add Z or +08:00)")
    return moment


def phenomenon_time(value, where: str, now: datetime | None = None) -> tuple[datetime, datetime | None]:
    """(start, end or None) of `value` (the clock's time if None), no more than a day after `now` (the clock's time
    unless given: a request of 10,000 observations reads it once)."""
    if value is None:
        return datetime.now(timezone.utc), None
    if isinstance(value, str) and "/" in value:
        start, end = (instant(v, where) for v in value.split("/", 1))
        if end < start:
            raise bad(where, "the interval ends before it starts")
    else:
        start, end = instant(value, where), None
    if (end or start) > (now or datetime.now(timezone.utc)) + FUTURE:
        raise bad(where, f"{value} is more than a day in the future")
    return start, end


def result(value, observation_type: str, where: str) -> float:
    kind = OBSERVATION_TYPES.get(observation_type, "number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(where, f"must be a number for a Datastream of type {observation_type.rsplit('/', 1)[-1]}, "
                  f"not {type(value).__name__ if value is not None else 'null'}")
    if kind == "integer" and value != int(value):
        raise bad(where, "must be a whole number for an OM_CountObservation Datastream")
    if isinstance(value, float) and not math.isfinite(value):  # an int is finite
        raise bad(where, "must be a finite number")
    return float(value)


def reference(value, where: str) -> int | None:
    """The id of `{"@iot.id": n}`, None for an inline entity to create."""
    value = obj(value, where)
    if "@iot.id" not in value:
        return None
    key = value["@iot.id"]
    if isinstance(key, bool) or not isinstance(key, int) or abs(key) >= 2**63:
        raise bad(f"{where}.@iot.id", "must be an integer id")
    return key


def geometry(value, where: str) -> bytes:
    """GeoJSON geometry (or a Feature's) as JSON text for ST_GeomFromGeoJSON."""
    value = obj(value, where)
    if value.get("type") == "Feature":
        value = obj(value.get("geometry"), f"{where}.geometry")
    if not isinstance(value.get("type"), str) or "coordinates" not in value and "geometries" not in value:
        raise bad(where, "must be a GeoJSON geometry, e.g. {\"type\": \"Point\", \"coordinates\": [120.4, 31.5]}")
    return orjson.dumps(value).decode()
