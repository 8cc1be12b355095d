"""The feature store: the SQL that reads a layer's features (pages, one feature, downloads) and writes them.

A `Selection` says which features (bbox, datetime, CQL2 filter, as of a moment), with which properties and
in which CRS. PostgreSQL writes the GeoJSON: each feature is one json_build_object with ST_AsGeoJSON for its
geometry, and a page is one string_agg sent with the count of matches (up to a bound past the page), so a
page is one round trip. The whole layer's count now is read from `twin.feature_count`, which the database
keeps, so an unfiltered page reports an exact `numberMatched` at any size.

A write that names the version it read (`write_version`) changes nothing if the feature has moved on since.
"""

import operator
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from itertools import chain

import shapely
from sqlalchemy import (JSON, BigInteger, Integer, Text, case, cast, delete, func, insert, literal, null, select,
                        union_all, update)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from layers import crs as crs_
from layers import params
from layers.catalog import SRID, LayerSpec
from layers.changelog import change
from layers.filters import Filter
from layers.revert import restore_insert, restore_update
from layers.statements import fetch_one
from layers.tables import current, feature_count, history, layer_at, parts
from twin.errors import ApiError


def time_field(spec: LayerSpec) -> str | None:
    """The property `datetime` selects on: the layer's time_field, else its only date/time field."""
    if spec.time_field:
        return spec.time_field
    temporal = [f.name for f in spec.fields if f.type in ("date", "timestamptz")]
    return temporal[0] if len(temporal) == 1 else None


@dataclass(frozen=True)
class Selection:
    """Which features of a layer, with which properties, in which CRS, now or as of a moment."""
    spec: LayerSpec
    names: list[str]
    out: crs_.Crs = crs_.DEFAULT
    box: params.BBox | None = None
    moment: params.Period | None = None
    cql: Filter | None = None
    as_of: datetime | None = None

    def where(self, columns) -> list:
        spec, clauses = self.spec, []
        if self.box is not None:
            if not spec.geometry:
                raise ApiError(400, "invalid_parameter", f"Layer '{spec.id}' has no geometry to filter by bbox",
                               where="query.bbox")
            clauses.append(self.box.intersects(columns.geom))
        if self.moment is not None:
            name = time_field(spec)
            if name is None:
                raise ApiError(400, "invalid_parameter", f"Layer '{spec.id}' has no temporal property for "
                               "datetime", where="query.datetime")
            clauses.append(self.moment.clause(columns[name]))
        if self.cql is not None:
            clauses.append(self.cql.clause(spec, columns))
        return clauses


def _json_value(spec: LayerSpec, columns, name: str):
    """A property's JSON; a real field always carries a decimal point (7.0, not 7), so clients that guess
    types from values (GDAL reads a page, then fixes its schema) never take it for an integer."""
    column = columns[name]
    field = spec.field(name)
    if field is None or field.type != "real":
        return column
    whole = (column == func.trunc(column)) & (func.abs(column) < 1e15)
    return case((whole, cast(func.concat(cast(cast(column, BigInteger), Text), ".0"), JSON)),
                else_=func.to_json(column))


def geojson(selection: Selection, columns):
    """One feature's GeoJSON as a json expression over `columns`."""
    spec, out = selection.spec, selection.out
    properties = func.json_build_object(*chain.from_iterable((literal(n, Text), _json_value(spec, columns, n))
                                                             for n in selection.names))
    geometry = (cast(func.ST_AsGeoJSON(crs_.output(columns.geom, out), out.decimals, 0), JSON)
                if spec.geometry else null())
    return func.json_build_object(literal("type", Text), literal("Feature", Text), literal("id", Text), columns.fid,
                                  literal("geometry", Text), geometry, literal("properties", Text), properties)


def _cut(selection: Selection, columns, where: list, keys: list[tuple[str, bool]]):
    """The matching rows' plain columns (sort keys as sort_0…, fid, properties, geometry) in page order."""
    sort = [columns[name].label(f"sort_{i}") for i, (name, _) in enumerate(keys)]
    carried = [columns.fid, *(columns[n] for n in selection.names), *([columns.geom] if selection.spec.geometry
                                                                     else [])]
    return (select(*sort, *carried).where(*where)
            .order_by(*(columns[n].desc() if desc else columns[n] for n, desc in keys), columns.fid))


@dataclass(frozen=True)
class FoundPage:
    matched: int | None  # None: more than the count's bound
    returned: int
    features: str  # the features' GeoJSON, comma-separated


async def page(engine: AsyncEngine, selection: Selection, page: params.Page, keys: list[tuple[str, bool]],
               count_bound: int) -> FoundPage:
    """A page of the selected features in `keys` order (then fid), counted up to `count_bound` past the page."""
    spec, as_of = selection.spec, selection.as_of
    # as of a moment, the layer is two disjoint parts (current rows, superseded versions), each cut and
    # counted on its own, then merged: the planner does not push an order or a limit into a union
    pieces = [current(spec)] if as_of is None else [p.subquery(f"part_{i}") for i, p in enumerate(parts(spec, as_of))]
    wheres = [selection.where(piece.c) for piece in pieces]
    # the page is cut from plain columns; JSON is written only for its rows, not for the skipped ones
    if as_of is None:
        rows = _cut(selection, pieces[0].c, wheres[0], keys).limit(page.limit).offset(page.offset).subquery("page")
    else:
        both = union_all(*(_cut(selection, piece.c, where, keys).limit(page.offset + page.limit)
                           for piece, where in zip(pieces, wheres))).subquery("parts")
        rows = (select(*both.c).order_by(*(both.c[f"sort_{i}"].desc() if desc else both.c[f"sort_{i}"]
                                           for i, (_, desc) in enumerate(keys)), both.c.fid)
                .limit(page.limit).offset(page.offset).subquery("page"))
    sort = [rows.c[f"sort_{i}"] for i in range(len(keys))]
    page_order = [c.desc() if desc else c for c, (_, desc) in zip(sort, keys)]
    feature = cast(geojson(selection, rows.c), Text)
    agg = select(func.count().label("returned"),
                 func.string_agg(feature, aggregate_order_by(literal(",", Text), *page_order, rows.c.fid))
                 .label("features")).subquery("agg")
    if as_of is None and not wheres[0]:  # the whole layer now: its count is kept by the database
        counted_to = None
        matched = (select(feature_count.c.features).where(feature_count.c.layer == spec.id).scalar_subquery())
    else:  # each part's matches counted up to the bound: past it in either, the sum reaches the bound too
        counted_to = page.offset + page.limit + count_bound
        matched = reduce(operator.add, [
            select(func.count()).select_from(select(piece.c.fid).where(*where).limit(counted_to).subquery())
            .scalar_subquery() for piece, where in zip(pieces, wheres)])
    statement = select(matched.label("matched"), agg.c.returned, agg.c.features)
    async with engine.connect() as conn:
        row = await fetch_one(conn, statement)
    matched = row.matched if counted_to is None or row.matched < counted_to else None
    return FoundPage(matched, row.returned, row.features or "")


async def feature(engine: AsyncEngine, selection: Selection, fid: int) -> tuple[str, int] | None:
    """(GeoJSON text, version) of feature `fid` as selected, or None if the layer has no such feature."""
    columns = layer_at(selection.spec, selection.as_of).c
    statement = select(cast(geojson(selection, columns), Text), columns.version).where(columns.fid == fid)
    async with engine.connect() as conn:
        row = await fetch_one(conn, statement)
    return None if row is None else (row[0], row[1])


def xy_names(out: crs_.Crs) -> tuple[str, str]:
    """The coordinate columns' names of a point download: lon/lat in a geographic CRS, else x/y."""
    return ("lon", "lat") if out.geographic else ("x", "y")


def download(selection: Selection, geometry: str):
    """Every selected feature in fid order, one row each: fid, the properties and the geometry as `geometry`
    says: "geojson" (the whole feature as GeoJSON text, labelled feature), "wkb", "wkt" or "xy" (points). The
    files' geometries keep x = east, as GIS files do."""
    spec, out = selection.spec, selection.out
    src = layer_at(spec, selection.as_of)
    if geometry == "geojson":
        columns = [cast(geojson(selection, src.c), Text).label("feature")]
    else:
        columns = [src.c.fid, *(src.c[n] for n in selection.names)]
        if spec.geometry:
            geom = src.c.geom if out.srid == SRID else func.ST_Transform(src.c.geom, out.srid)
            x, y = xy_names(out)
            columns += {"wkb": [func.ST_AsBinary(geom).label("geometry")],
                        "wkt": [func.ST_AsText(geom, out.decimals).label("WKT")],
                        "xy": [func.ST_X(geom).label(x), func.ST_Y(geom).label(y)]}[geometry]
    return select(*columns).select_from(src).where(*selection.where(src.c)).order_by(src.c.fid)


# -- writing -----------------------------------------------------------------------------------------------
def etag_of(layer: str, fid: int, version: int) -> str:
    """The ETag of a feature version. Strong: a version's content never changes."""
    return f'"{layer}.{fid}.v{version}"'


def _sql_values(values: dict) -> dict:
    if values.get("geom") is not None:
        return values | {"geom": func.ST_GeomFromWKB(shapely.to_wkb(values["geom"]), SRID)}
    return values


async def current_row(conn: AsyncConnection, spec: LayerSpec, fid: int):
    table = current(spec)
    return (await conn.execute(select(table).where(table.c.fid == fid))).first()


async def insert_feature(conn: AsyncConnection, spec: LayerSpec, values: dict):
    """Add a feature from validated values (`feature_input.validated_values`); its stored row."""
    table = current(spec)
    return (await conn.execute(insert(table).values(_sql_values(values)).returning(*table.columns))).one()


def replacing(spec: LayerSpec, values: dict):
    """An UPDATE setting these validated values, for `write_version`."""
    return update(current(spec)).values(_sql_values(values))


def deleting(spec: LayerSpec):
    return delete(current(spec))


def restoring(spec: LayerSpec, fid: int, version: int):
    """An UPDATE bringing back a live feature's past version, for `write_version`."""
    return restore_update(spec, select(literal(fid, BigInteger), literal(version, Integer)))


async def write_version(conn: AsyncConnection, spec: LayerSpec, statement, fid: int, version: int):
    """Apply an UPDATE or DELETE to feature `fid` only if it is still at `version`: (the written row, None), or
    (None, the version it is at now, None if it is gone)."""
    table = current(spec)
    guarded = statement.where(table.c.fid == fid, table.c.version == version)
    done = (await conn.execute(guarded.returning(*table.columns))).first()
    if done is not None:
        return done, None
    # the statement took the change-log lock, so this read is stable until the commit
    return None, (await conn.execute(select(table.c.version).where(table.c.fid == fid))).scalar()


async def versions(conn: AsyncConnection, spec: LayerSpec, fid: int, version: int) -> tuple[bool, list[int]]:
    """Whether `version` of the feature is in the history, and every version it has had."""
    past, c = history(spec), change.c
    kept = (await conn.execute(select(past.c.version).where(past.c.fid == fid, past.c.version == version)
                               .limit(1))).first() is not None
    known = (await conn.execute(select(c.version).where(c.layer == spec.id, c.fid == fid, c.operation != "delete")
                                .order_by(c.version))).scalars().all()
    return kept, list(known)


async def reinsert(conn: AsyncConnection, spec: LayerSpec, fid: int, version: int):
    """Re-create a deleted feature, with its own fid, as its past `version`; its stored row."""
    sql, bound = restore_insert(conn, spec, select(literal(fid, BigInteger), literal(version, Integer)))
    await conn.exec_driver_sql(sql, bound)
    return await current_row(conn, spec, fid)
