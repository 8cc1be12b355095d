"""Query parameters of the features API as FastAPI dependencies: each parses and validates once.

Items, tiles and spatial queries declare the ones they take (`Depends(bbox)`, …) and get
plain values back; a bad value is a 400 naming the parameter, before any SQL is built.
"""

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from fastapi import Query
from sqlalchemy import DateTime, and_, func

from layers import crs as crs_
from layers.catalog import LayerSpec
from layers.cql2 import parse
from layers.filters import Filter
from twin.errors import ApiError

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000_000
LOCAL_TIME = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


async def page(
    limit: int = Query(DEFAULT_LIMIT, ge=1, json_schema_extra={"maximum": MAX_LIMIT},
                       description=f"Features per page: {DEFAULT_LIMIT} by default; a value above {MAX_LIMIT} "
                                   f"is served as {MAX_LIMIT} (OGC API Features allows the server to clamp)."),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="Features to skip (the `next` link sets it)."),
) -> Page:
    return Page(min(limit, MAX_LIMIT), offset)


@dataclass(frozen=True)
class BBox:
    """A box given in `crs`, kept as (min x, min y, max x, max y) in PostGIS's x = east order."""
    minx: float
    miny: float
    maxx: float
    maxy: float
    crs: crs_.Crs

    def envelope(self):
        """The box as a polygon in the storage CRS."""
        return crs_.envelope(self.minx, self.miny, self.maxx, self.maxy, self.crs)

    def intersects(self, geom):
        return func.ST_Intersects(geom, self.envelope())


async def bbox(
    bbox: str | None = Query(None, description="minx,miny,maxx,maxy (4 or 6 numbers) in the axis order of "
                                               "bbox-crs: for EPSG:4326 and EPSG:4490 that is lat,lon."),
    bbox_crs: str | None = Query(None, alias="bbox-crs", description="CRS of bbox; CRS84 by default."),
) -> BBox | None:
    if bbox is None:
        if bbox_crs is not None:
            crs_.parse(bbox_crs, "query.bbox-crs")
        return None
    box_crs = crs_.parse(bbox_crs, "query.bbox-crs")
    try:
        numbers = [float(part) for part in bbox.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (4, 6) or not all(math.isfinite(n) for n in numbers):
        raise ApiError(400, "invalid_parameter", f"bbox must be 4 (or 6) comma-separated numbers, not "
                       f"'{bbox[:100]}'", where="query.bbox")
    half = len(numbers) // 2
    low, high = numbers[:2], numbers[half:half + 2]  # a 6-number box has heights at [2] and [5]: ignored
    if low[0] > high[0] or low[1] > high[1]:
        raise ApiError(400, "invalid_parameter", "bbox minimum exceeds its maximum (boxes across the "
                       "antimeridian are not supported)", where="query.bbox")
    if box_crs.northing_first:
        low, high = low[::-1], high[::-1]
    if box_crs.geographic and not (-180 <= low[0] and high[0] <= 180 and -90 <= low[1] and high[1] <= 90):
        raise ApiError(400, "invalid_parameter", "bbox is outside longitude -180..180 / latitude -90..90 "
                       "(check the axis order of bbox-crs)", where="query.bbox")
    return BBox(low[0], low[1], high[0], high[1], box_crs)


async def output_crs(crs: str | None = Query(None, description="CRS of the response geometries; CRS84 by default. "
                                                          "One of: " + ", ".join(crs_.SUPPORTED))) -> crs_.Crs:
    return crs_.parse(crs, "query.crs")


def parse_moment(text: str, where: str) -> date | datetime:
    """An RFC 3339 date-time or a calendar date; a date-time without an offset is China Standard Time."""
    value = text.strip()
    if len(value) == 11 and value.endswith("T"):
        value = value[:-1]  # GDAL's OAPIF driver writes a date as "2015-01-01T"
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise ApiError(400, "invalid_parameter", f"'{text[:60]}' is not an RFC 3339 date-time "
                       "(e.g. 2020-05-10T08:00:00Z) or a date (2020-05-10)", where=where) from e
    return moment if moment.tzinfo else moment.replace(tzinfo=LOCAL_TIME)


def _is_date(value) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _instant(value: date | datetime) -> datetime:
    """A datetime as is; a date as the start of that day in China Standard Time."""
    return datetime.combine(value, time(), LOCAL_TIME) if _is_date(value) else value


@dataclass(frozen=True)
class Period:
    """An instant or a closed interval; None is an open end. A date means that whole day (on a
    timestamp column: the day in China Standard Time, the district's clock)."""
    start: date | datetime | None
    end: date | datetime | None

    def clause(self, column):
        on_time = isinstance(column.type, DateTime)
        parts = []
        if self.start is not None:
            parts.append(column >= (_instant(self.start) if on_time else self.start))
        if self.end is not None:
            if _is_date(self.end):
                after = self.end + timedelta(days=1)
                parts.append(column < (_instant(after) if on_time else after))
            else:
                parts.append(column <= self.end)
        return and_(*parts)


def parse_period(text: str, where: str) -> Period:
    if "/" not in text:
        moment = parse_moment(text, where)
        return Period(moment, moment)
    first, _, second = text.partition("/")
    start = None if first in ("", "..") else parse_moment(first, where)
    end = None if second in ("", "..") else parse_moment(second, where)
    if start is None and end is None:
        raise ApiError(400, "invalid_parameter", "An interval needs at least one end, e.g. 2020-05-10T00:00:00Z/..",
                       where=where)
    if start is not None and end is not None and _instant(start) > _instant(end):
        raise ApiError(400, "invalid_parameter", f"The interval '{text[:100]}' ends before it starts", where=where)
    return Period(start, end)


async def period(datetime: str | None = Query(
        None, description="An instant or interval (RFC 3339; '..' or empty for an open end), e.g. "
                          "2020-05-10T00:00:00Z/2020-05-11T00:00:00Z, 2020-05-10/.., 2020-05-10")) -> Period | None:
    return None if datetime is None else parse_period(datetime, "query.datetime")


async def as_of(as_of: str | None = Query(
        None, description="Read the layer as it was at this moment (RFC 3339; without an offset: China "
                          "Standard Time).")) -> datetime | None:
    return parse_as_of(as_of)


def parse_as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = parse_moment(text, "query.as_of")
    if not isinstance(moment, datetime):
        raise ApiError(400, "invalid_parameter", "as_of needs a date-time, e.g. 2024-01-01T00:00:00+08:00",
                       where="query.as_of")
    return moment


async def cql_filter(
    filter: str | None = Query(None, description="A CQL2 filter (see /collections/{layer}/queryables)."),
    # cql-text: the draft's name for cql2-text, the one GDAL's OAPIF driver looks for and sends
    filter_lang: Literal["cql2-text", "cql2-json", "cql-text"] = Query("cql2-text", alias="filter-lang"),
    filter_crs: str | None = Query(None, alias="filter-crs", description="CRS of geometry literals; CRS84 "
                                                                          "by default."),
) -> Filter | None:
    return parse_filter(filter, filter_lang, filter_crs)


def parse_filter(text: str | None, lang: str, crs: str | None) -> Filter | None:
    literal_crs = crs_.parse(crs, "query.filter-crs")
    return None if text is None else Filter(parse(text, "cql2-text" if lang == "cql-text" else lang), literal_crs)


def _names(text: str, where: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) > 200 or any(len(n) > 64 for n in names):
        raise ApiError(400, "invalid_parameter", "Too many or too long field names", where=where)
    return [n for n in names if n]


@dataclass(frozen=True)
class Properties:
    """The fields to return (None: all of them)."""
    names: tuple[str, ...] | None

    def fields(self, spec: LayerSpec) -> list[str]:
        if self.names is None:
            return [f.name for f in spec.fields]
        unknown = [n for n in self.names if spec.field(n) is None]
        if unknown:
            raise ApiError(400, "unknown_field", f"Unknown properties of layer '{spec.id}': {', '.join(unknown)}. "
                           f"Known: {', '.join(f.name for f in spec.fields)}", where="query.properties")
        return list(dict.fromkeys(self.names))


async def properties(properties: str | None = Query(
        None, description="Comma-separated fields to return; empty for none.")) -> Properties:
    return parse_properties(properties)


def parse_properties(text: str | None) -> Properties:
    return Properties(None if text is None else tuple(_names(text, "query.properties")))


@dataclass(frozen=True)
class SortBy:
    """(field, descending) keys, in order."""
    keys: tuple[tuple[str, bool], ...]

    def checked(self, spec: LayerSpec) -> list[tuple[str, bool]]:
        unknown = [name for name, _ in self.keys if spec.field(name) is None]
        if unknown:
            raise ApiError(400, "unknown_field", f"Cannot sort layer '{spec.id}' by {', '.join(unknown)}. "
                           f"Sortable: {', '.join(f.name for f in spec.fields)}", where="query.sortby")
        return list(dict(self.keys).items())


async def sortby(sortby: str | None = Query(
        None, description="Comma-separated fields, each optionally prefixed + (ascending) or - (descending).")
           ) -> SortBy:
    if sortby is None:
        return SortBy(())
    keys = []
    for name in _names(sortby, "query.sortby"):
        descending = name.startswith("-")
        keys.append((name.lstrip("+-").strip(), descending))
    return SortBy(tuple(keys))
