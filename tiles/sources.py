"""Tile sources: the SQL that makes a layer's Mapbox Vector Tile for one tile, in PostGIS.

A layer's part of a tile is one scalar subquery giving bytea (`ST_AsMVT` over the features in the
tile); a tile is those parts joined with `||`, so a composite tile of many layers is one SELECT
and one database round trip. The feature test is index-using in the storage CRS (the buffered
tile envelope transformed to EPSG:4490 once, `geom && envelope`); geometries are then
transformed to the grid's CRS, simplified to the tile's resolution and clipped by
`ST_AsMVTGeom`. Dense point layers become clusters: one feature per grid cell with its
`point_count` and the cell's most common category. A layer whose points are counted per fine cell in
`twin.tile_cell` (migrations 0008, 0010; `cluster_counts` in its spec) clusters its current Web Mercator tiles from those counts, up
to zoom 15, instead of from its points; `as_of` and `filter` tiles, and the other grids, cluster the points.
"""

from dataclasses import dataclass
from datetime import datetime
from functools import reduce

from sqlalchemy import (BigInteger, Column, Float, Integer, LargeBinary, MetaData, Table, Text, bindparam, cast,
                        func, literal, null, select, union_all)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql import ColumnElement, Select, Selectable

from layers.catalog import SRID, LayerSpec
from layers.filters import Filter
from layers.tables import current, layer_at
from tiles.settings import TileSettings
from tiles.tms import BUFFER, EXTENT, TileAddress

POINT_COUNT = "point_count"
SIMPLIFY_UNITS = 4  # simplification tolerance in MVT units: half a pixel of a tile drawn 512 px wide
SCREEN_PIXELS = 512  # polygons smaller than one such pixel of the tile are dropped
CELL_LEVEL = 19  # twin.tile_cell cuts the Web Mercator world into 2^19 x 2^19 cells (migration 0010)
FIELD_KINDS = {"text": "String", "integer": "Number", "real": "Number", "boolean": "Boolean", "date": "String",
               "timestamptz": "String"}


TILE_CELL = Table("tile_cell", MetaData(), Column("layer", Text), Column("cx", Integer), Column("cy", Integer),
                  Column("category", Text), Column("points", BigInteger), Column("sum_x", Float),
                  Column("sum_y", Float), schema="twin")


@dataclass(frozen=True)
class LayerRequest:
    """What shapes one layer's part of a tile besides the tile itself."""
    spec: LayerSpec
    properties: tuple[str, ...]
    as_of: datetime | None = None
    filter: Filter | None = None


def clusters(spec: LayerSpec) -> bool:
    return spec.cluster and spec.geometry == "Point"


def clustered_at(spec: LayerSpec, z: int, settings: TileSettings) -> bool:
    """Whether every tile of the layer at zoom z is clustered (low for the layer), whatever its count."""
    return clusters(spec) and z < spec.minzoom + settings.cluster_zooms


def cell_block(tile: TileAddress, settings: TileSettings) -> int | None:
    """How many of twin.tile_cell's cells make a side of one of the tile's cluster cells, None when they do
    not fit whole (another grid, or a zoom above 15)."""
    per_side = 2 ** tile.z * settings.cluster_cells
    if tile.tms != "WebMercatorQuad" or per_side > 2 ** CELL_LEVEL or 2 ** CELL_LEVEL % per_side:
        return None
    return 2 ** CELL_LEVEL // per_side


def from_cells(request: LayerRequest, tile: TileAddress, settings: TileSettings) -> bool:
    """Whether the layer's clusters in this tile are summed from twin.tile_cell, which holds the current points."""
    return (request.spec.cluster_counts and request.as_of is None and request.filter is None
            and cell_block(tile, settings) is not None)


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
            "tile_cell": cell} | _cell_values(tile, settings)


def _cell_values(tile: TileAddress, settings: TileSettings) -> dict[str, int]:
    """The tile's range of twin.tile_cell cells (inclusive) and how many make a cluster cell's side."""
    block = cell_block(tile, settings) or 1
    side = block * settings.cluster_cells
    return {"cell_block": block, "cell_x0": tile.x * side, "cell_x1": (tile.x + 1) * side - 1,
            "cell_y0": tile.y * side, "cell_y1": (tile.y + 1) * side - 1}


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


def _inside(points: Selectable, values: dict) -> list:
    """The points of the tile itself: west and north edges in, east and south out, as twin.tile_cell's cells
    (`&&` would compare float4 boxes, taking in points up to a metre beyond the edges)."""
    x, y = func.ST_X(points.c.g), func.ST_Y(points.c.g)
    return [x >= _value(values, "tile_xmin"), x < _value(values, "tile_xmax"),
            y > _value(values, "tile_ymin"), y <= _value(values, "tile_ymax")]


def _clustered(points: Selectable, request: LayerRequest, tile: TileAddress, values: dict) -> Select:
    """One feature per cell of the tile's cluster grid: the cell's points counted, at their mean position,
    with the most common category. Cells are aligned to the tile's edges and only points inside the tile
    itself are counted (`_inside`), so each point is in exactly one cluster of one tile. The cell is plain
    arithmetic on the projected coordinates (no geometry made per point): a million points cluster in about
    a second."""
    shown = request.spec.category
    x, y, cell = func.ST_X(points.c.g), func.ST_Y(points.c.g), _value(values, "tile_cell")
    return select(
        cast(null(), BigInteger).label("fid"),
        *(func.mode().within_group(points.c[n]).label(n) if n == shown
          else cast(null(), points.c[n].type).label(n) for n in request.properties),
        func.count().label(POINT_COUNT),
        _mvt_geom(func.ST_SetSRID(func.ST_MakePoint(func.avg(x), func.avg(y)), tile.srid), tile, values).label("geom"),
    ).where(*_inside(points, values)).group_by(
        func.floor((x - _value(values, "tile_xmin")) / cell), func.floor((_value(values, "tile_ymax") - y) / cell))


def _count(values: dict, name: str) -> ColumnElement:
    return bindparam(name, values[name], Integer)


def _tile_cells(request: LayerRequest, values: dict) -> list:
    """The layer's twin.tile_cell rows inside the tile (by the primary key)."""
    cells = TILE_CELL
    return [cells.c.layer == literal(request.spec.id),
            cells.c.cx.between(_count(values, "cell_x0"), _count(values, "cell_x1")),
            cells.c.cy.between(_count(values, "cell_y0"), _count(values, "cell_y1"))]


def _clustered_cells(request: LayerRequest, tile: TileAddress, values: dict) -> Select:
    """The clusters of `_clustered`, summed from the layer's counts in twin.tile_cell: per cluster cell and
    category first, then per cluster cell with the category of most points (ties: the first, as mode())."""
    cells, inside = TILE_CELL, _tile_cells(request, values)
    block = _count(values, "cell_block")
    by_category = select((cells.c.cx // block).label("gx"), (cells.c.cy // block).label("gy"), cells.c.category,
                         func.sum(cells.c.points).label("n"), func.sum(cells.c.sum_x).label("sx"),
                         func.sum(cells.c.sum_y).label("sy")).where(*inside).group_by(
        "gx", "gy", cells.c.category).subquery(f"{request.spec.id}_cells")
    shown, total = request.spec.category, func.sum(by_category.c.n)
    src = current(request.spec).c
    most = func.nullif(func.array_agg(aggregate_order_by(by_category.c.category, by_category.c.n.desc(),
                                                         by_category.c.category))[1], "")  # '' stands for null
    mean = [func.sum(c).op("/", return_type=Float)(cast(total, Float)) for c in (by_category.c.sx, by_category.c.sy)]
    position = func.ST_SetSRID(func.ST_MakePoint(*mean), tile.srid)
    return select(
        cast(null(), BigInteger).label("fid"),
        *(cast(most, src[name].type).label(name) if name == shown else cast(null(), src[name].type).label(name)
          for name in request.properties),
        cast(total, BigInteger).label(POINT_COUNT),
        _mvt_geom(position, tile, values).label("geom"),
    ).group_by(by_category.c.gx, by_category.c.gy)


def _dense_cells(request: LayerRequest, values: dict, limit: int) -> ColumnElement:
    """Whether the tile's cells hold more than `limit` points, from at most limit + 1 of them: every row counts
    at least one point (emptied cells are deleted), so more rows than the limit are enough."""
    sample = select(TILE_CELL.c.points).where(*_tile_cells(request, values)).limit(limit + 1).subquery(
        f"{request.spec.id}_cell_sample")
    return select(func.coalesce(func.sum(sample.c.points), 0) > limit).scalar_subquery()


def _points(request: LayerRequest, src: Selectable, where: list, tile: TileAddress, values: dict,
            settings: TileSettings):
    """Points as they are, or clustered when the zoom is low for the layer or the tile is dense."""
    spec, names = request.spec, request.properties
    points = select(src.c.fid, *(src.c[n] for n in names), func.ST_Transform(src.c.geom, tile.srid).label("g"))
    counted = from_cells(request, tile, settings)
    if counted and clustered_at(spec, tile.z, settings):
        return _clustered_cells(request, tile, values)
    if clustered_at(spec, tile.z, settings):
        # OFFSET 0 keeps the subquery from being merged into the clusters' query, where each use of `g`
        # would transform every point again
        return _clustered(points.where(*where).offset(0).subquery(f"{spec.id}_points"), request, tile, values)
    candidates = points.where(*where).cte(f"{spec.id}_points")
    if counted:
        # MATERIALIZED: only read when the tile is not dense; inlined, a parallel scan of the whole layer
        # would start its workers before the dense test could skip it
        candidates = candidates.prefix_with("MATERIALIZED")
    as_is = select(candidates.c.fid, *(candidates.c[n] for n in names), cast(null(), BigInteger).label(POINT_COUNT),
                   _mvt_geom(candidates.c.g, tile, values).label("geom"))
    limit = settings.dense_points
    if counted:
        dense = _dense_cells(request, values, limit)
        return union_all(as_is.where(~dense), _clustered_cells(request, tile, values).where(dense))
    dense = (select(func.count() > limit)
             .select_from(select(candidates.c.fid).where(*_inside(candidates, values)).limit(limit + 1)
                          .subquery(f"{spec.id}_sample"))
             .scalar_subquery())
    return union_all(as_is.where(~dense), _clustered(candidates, request, tile, values).where(dense))


def layer_part(request: LayerRequest, tile: TileAddress, values: dict, settings: TileSettings) -> ColumnElement:
    """A scalar subquery: the layer's MVT layer (bytea) for the tile, empty when nothing is there."""
    spec = request.spec
    src = layer_at(spec, request.as_of)
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
