"""Tile sources: the SQL that makes a layer's Mapbox Vector Tile for one tile, in PostGIS.

A layer's part of a tile is one scalar subquery giving bytea (`ST_AsMVT` over the features in the
tile); a tile is those parts joined with `||`, so a composite tile of many layers is one SELECT
and one database round trip. The feature test is index-using in the storage CRS (the buffered
tile envelope transformed to EPSG:4490 once, `geom && envelope`); geometries are then
transformed to the grid's CRS, simplified to the tile's resolution and clipped by
`ST_AsMVTGeom`. Dense point layers become clusters: one feature per grid cell with its
`point_count` and the cell's most common category.
"""

from dataclasses import dataclass
from datetime import datetime
from functools import reduce

from sqlalchemy import BigInteger, Float, LargeBinary, bindparam, cast, func, null, select, union_all
from sqlalchemy.sql import ColumnElement, Select, Selectable

from layers.catalog import SRID, LayerSpec
from layers.filters import Filter
from layers.tables import source
from tiles.settings import TileSettings
from tiles.tms import BUFFER, EXTENT, TileAddress

POINT_COUNT = "point_count"
SIMPLIFY_UNITS = 4  # simplification tolerance in MVT units: half a pixel of a tile drawn 512 px wide
SCREEN_PIXELS = 512  # polygons smaller than one such pixel of the tile are dropped
FIELD_KINDS = {"text": "String", "integer": "Number", "real": "Number", "boolean": "Boolean", "date": "String",
               "timestamptz": "String"}


@dataclass(frozen=True)
class LayerRequest:
    """What shapes one layer's part of a tile besides the tile itself."""
    spec: LayerSpec
    properties: tuple[str, ...]
    as_of: datetime | None = None
    filter: Filter | None = None


def category(spec: LayerSpec) -> str | None:
    """The attribute a cluster reports (its most common value): the first enumerated field, else class_name."""
    enumerated = next((f.name for f in spec.fields if f.values), None)
    return enumerated or (spec.field("class_name") and "class_name")


def clusters(spec: LayerSpec) -> bool:
    return spec.geometry == "Point"


def clustered_at(spec: LayerSpec, z: int, settings: TileSettings) -> bool:
    """Whether every tile of the layer at zoom z is clustered (low for the layer), whatever its count."""
    return clusters(spec) and z < spec.minzoom + settings.cluster_zooms


def field_kinds(spec: LayerSpec) -> dict[str, str]:
    """TileJSON's vector_layers fields: attribute → String | Number | Boolean."""
    kinds = {f.name: FIELD_KINDS[f.type] for f in spec.fields}
    return kinds | ({POINT_COUNT: "Number"} if clusters(spec) else {})


def tile_values(tile: TileAddress, settings: TileSettings) -> dict[str, float]:
    """The numbers that place a tile's SQL: bound as named parameters, so one SQL text serves every tile
    of a shape (see tiles.plans)."""
    xmin, ymin, xmax, ymax = tile.bounds
    west, south, east, north = tile.lonlat_bounds
    span, cell = xmax - xmin, (xmax - xmin) / settings.cluster_cells
    return {"tile_xmin": xmin, "tile_ymin": ymin, "tile_xmax": xmax, "tile_ymax": ymax,
            "tile_reach": span * BUFFER / EXTENT, "tile_tolerance": span * SIMPLIFY_UNITS / EXTENT,
            # polygons smaller than a screen pixel are dropped (both in square degrees)
            "tile_min_area": (east - west) * (north - south) / SCREEN_PIXELS ** 2,
            "tile_cell": cell}


def _value(values: dict[str, float], name: str) -> ColumnElement:
    return bindparam(name, values[name], Float)


def _envelope(tile: TileAddress, values: dict[str, float]) -> ColumnElement:
    return func.ST_MakeEnvelope(*(_value(values, n) for n in ("tile_xmin", "tile_ymin", "tile_xmax", "tile_ymax")),
                                tile.srid)


def _storage_envelope(tile: TileAddress, values: dict[str, float]) -> ColumnElement:
    return func.ST_Transform(func.ST_Expand(_envelope(tile, values), _value(values, "tile_reach")), SRID)


def _mvt_geom(geom: ColumnElement, tile: TileAddress, values: dict[str, float]) -> ColumnElement:
    return func.ST_AsMVTGeom(geom, _envelope(tile, values), EXTENT, BUFFER, True)


def _features(request: LayerRequest, src: Selectable, where: list, tile: TileAddress, values: dict) -> Select:
    geom = func.ST_Transform(src.c.geom, tile.srid)
    if not clusters(request.spec):
        geom = func.ST_SimplifyPreserveTopology(geom, _value(values, "tile_tolerance"))
    columns = [src.c[name] for name in request.properties]
    return select(src.c.fid, *columns, _mvt_geom(geom, tile, values).label("geom")).where(*where)


def _clustered(points: Selectable, request: LayerRequest, tile: TileAddress, values: dict) -> Select:
    """One feature per cell of the tile's cluster grid: the cell's points counted, at their mean position,
    with the most common category. Cells are aligned to the tile's edges and only points inside the tile
    itself are counted, so each point is in exactly one cluster of one tile. The cell is plain arithmetic
    on the projected coordinates (no geometry made per point): a million points cluster in about a second."""
    shown = category(request.spec)
    x, y, cell = func.ST_X(points.c.g), func.ST_Y(points.c.g), _value(values, "tile_cell")
    return select(
        cast(null(), BigInteger).label("fid"),
        *(func.mode().within_group(points.c[n]).label(n) if n == shown
          else cast(null(), points.c[n].type).label(n) for n in request.properties),
        func.count().label(POINT_COUNT),
        _mvt_geom(func.ST_SetSRID(func.ST_MakePoint(func.avg(x), func.avg(y)), tile.srid), tile, values).label("geom"),
    ).where(points.c.g.op("&&")(_envelope(tile, values))).group_by(
        func.floor((x - _value(values, "tile_xmin")) / cell), func.floor((_value(values, "tile_ymax") - y) / cell))


def _points(request: LayerRequest, src: Selectable, where: list, tile: TileAddress, values: dict,
            settings: TileSettings):
    """Points as they are, or clustered when the zoom is low for the layer or the tile is dense."""
    spec, names = request.spec, request.properties
    points = select(src.c.fid, *(src.c[n] for n in names), func.ST_Transform(src.c.geom, tile.srid).label("g"))
    if clustered_at(spec, tile.z, settings):
        # OFFSET 0 keeps the subquery from being merged into the clusters' query, where each use of `g`
        # would transform every point again
        return _clustered(points.where(*where).offset(0).subquery(f"{spec.id}_points"), request, tile, values)
    candidates = points.where(*where).cte(f"{spec.id}_points")
    as_is = select(candidates.c.fid, *(candidates.c[n] for n in names), cast(null(), BigInteger).label(POINT_COUNT),
                   _mvt_geom(candidates.c.g, tile, values).label("geom"))
    limit = settings.dense_points
    dense = (select(func.count() > limit)
             .select_from(select(candidates.c.fid).limit(limit + 1).subquery(f"{spec.id}_sample"))
             .scalar_subquery())
    return union_all(as_is.where(~dense), _clustered(candidates, request, tile, values).where(dense))


def layer_part(request: LayerRequest, tile: TileAddress, values: dict, settings: TileSettings) -> ColumnElement:
    """A scalar subquery: the layer's MVT layer (bytea) for the tile, empty when nothing is there."""
    spec = request.spec
    src = source(spec, request.as_of)
    where = [src.c.geom.op("&&")(_storage_envelope(tile, values))]
    if request.filter is not None:
        where.append(request.filter.clause(spec, src.c))
    if spec.geometry == "MultiPolygon":
        where.append(func.ST_Area(src.c.geom) >= _value(values, "tile_min_area"))
    rows = (_points(request, src, where, tile, values, settings) if clusters(spec)
            else _features(request, src, where, tile, values))
    shaped = rows.subquery(f"{spec.id}_tile")
    return (select(func.ST_AsMVT(shaped.table_valued(), spec.id, EXTENT, "geom", "fid"))
            .select_from(shaped).where(shaped.c.geom.is_not(None)).scalar_subquery())


def tile_statement(requests: list[LayerRequest], tile: TileAddress, settings: TileSettings) -> Select:
    """One SELECT giving the whole tile: every layer's part concatenated (MVT layers concatenate as bytes)."""
    values = tile_values(tile, settings)
    parts = [layer_part(r, tile, values, settings) for r in requests]
    return select(reduce(lambda a, b: a.op("||", return_type=LargeBinary)(b), parts).label("mvt"))
