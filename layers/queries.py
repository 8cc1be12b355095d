"""Spatial queries under /query: the questions a district actually asks of its map.

`nearest` (the k nearest features to a point), `within` (features within a distance of a
geometry or of selected features), `intersects` (features in a drawn polygon, counted by
category), `at` (the polygons containing a point), `aggregate` (a layer counted or summed per
polygon of another, choropleth-ready) and `trace` (up- or downstream along the rivers, see
`layers.network`).

Each is a POST with a JSON body: `crs` names the CRS of the geometries sent and returned,
`as_of` answers from the layers as they were at that moment. Distances are metres on the
ellipsoid. Answers are bounded (the MAX_ figures), and a query stopped by the server's
statement_timeout becomes a 503 with Retry-After.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import orjson
import psycopg
from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from layers import aggregation, drainage_answer, drainage_graph, network
from layers.catalog import LayerSpec, get_layer, vector_layers
from layers.crs import Crs
from layers.crs import parse as parse_crs
from layers.query_bodies import (MAX_DISTANCE_M, MAX_K, MAX_LAYERS, MAX_RESULTS, Aggregate, At, Intersects, Nearest,
                                 Trace, Within, conditions)
from layers.query_geometry import (MAX_VERTICES, around, bound, collection, feature, feature_select, metres_between,
                                   near, read_geometry)
from layers.tables import layer_at
from twin.access import hidden_layers, require_read
from twin.errors import ApiError

router = APIRouter(prefix="/query", tags=["queries"])

RETRY_AFTER_S = 10
GEOJSON_ANSWER = {"response_class": Response,
                  "responses": {200: {"content": {"application/geo+json": {}}, "description": "A FeatureCollection"}}}
POLYGONS = {"MultiPolygon"}


@asynccontextmanager
async def snapshot(request: Request, writable: bool = False) -> AsyncIterator[AsyncConnection]:
    """A read-only, repeatable-read transaction, so every statement of one query sees the same data;
    `writable`: on the primary, for queries that make temporary tables (rolled back at the end all the same)."""
    try:
        engine = request.app.state.engine if writable else request.app.state.read_engine
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=not writable)
            # PostGIS set-returning functions get wild row estimates (ST_Dump: 1000 a row), and the
            # JIT compile they trigger costs ~0.4 s for queries that run in milliseconds.
            await conn.execute(text("SET LOCAL jit = off"))
            yield conn
    except DBAPIError as e:
        if isinstance(e.orig, psycopg.errors.QueryCanceled):
            raise ApiError(503, "query_timeout", "The query ran longer than the server allows and was stopped. "
                           "Retry later, or ask a smaller question (shorter distance, smaller area, fewer layers).",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from e
        raise


def vector_layer(name: str, where: str, geometry: set[str] | None = None) -> LayerSpec:
    spec = get_layer(name)
    if spec is None:
        raise ApiError(422, "unknown_layer", f"No layer {name[:100]!r}. See /collections for the catalog.",
                       where=where)
    if spec.geometry is None:
        raise ApiError(422, "not_a_vector_layer", f"Layer {name!r} has no geometries (a {spec.kind} layer).",
                       where=where)
    if geometry and spec.geometry not in geometry:
        raise ApiError(422, "wrong_layer_geometry", f"Layer {name!r} holds {spec.geometry}s; this query needs "
                       f"a {' or '.join(sorted(geometry))} layer.", where=where)
    return spec


def vector_layers_named(names: list[str], where: str, geometry: set[str] | None = None) -> list[LayerSpec]:
    return [vector_layer(name, f"{where}.{i}", geometry) for i, name in enumerate(names) if name not in names[:i]]


def _plain(value):
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def answer(body: dict, crs: Crs, media_type: str = "application/geo+json") -> Response:
    return Response(orjson.dumps(body, default=_plain), media_type=media_type, headers={"Content-Crs": crs.header})


def too_many(count: int, hint: str) -> ApiError:
    return ApiError(422, "too_many_results", f"{count} features match; at most {MAX_RESULTS} are returned. {hint}")


@router.get("")
async def queries():
    """The spatial queries and their limits."""
    return {
        "queries": {
            "nearest": "POST /query/nearest — the k nearest features of layers to a point, with distances",
            "within": "POST /query/within — features within a distance of a geometry or of selected features "
                      "(pages: limit, offset)",
            "intersects": "POST /query/intersects — features in a polygon, counted per layer and category",
            "at": "POST /query/at — the polygons (districts, streets, grids …) containing a point",
            "aggregate": "POST /query/aggregate — a layer counted or summed per polygon of another layer",
            "trace": "POST /query/trace — river reaches up- or downstream of a point, with sources and stations; "
                     "from a feature: the drainage network up- or downstream of it, or its service area",
        },
        "limits": {"max_distance_m": MAX_DISTANCE_M, "max_k": MAX_K, "max_vertices": MAX_VERTICES,
                   "max_results": MAX_RESULTS, "max_layers": MAX_LAYERS},
    }


@router.post("/nearest", **GEOJSON_ANSWER)
async def nearest(query: Nearest, request: Request) -> Response:
    """Per layer, the k features nearest to the point: KNN index order picks k candidates, the
    farthest of them bounds an exact geodesic search, so the k are exact in metres."""
    crs = parse_crs(query.crs, "body.crs")
    point = bound(read_geometry(query.point, crs, "body.point", {"Point"}))
    specs = vector_layers_named(query.layers, "body.layers")
    await require_read(request, [s.id for s in specs], "body.layers")
    features, counts = [], {}
    async with snapshot(request) as conn:
        for spec in specs:
            src = layer_at(spec, query.as_of)
            candidates = select(src.c.geom).order_by(src.c.geom.op("<->")(point)).limit(query.k).subquery()
            # + 1 mm: ST_DWithin can miss a feature at exactly the ST_Distance it reports
            reach = select(func.max(metres_between(candidates.c.geom, point)) + 0.001).scalar_subquery()
            if query.max_distance is not None:
                reach = func.least(reach, query.max_distance)
            distance = metres_between(src.c.geom, point)
            rows = (await conn.execute(
                feature_select(spec, src, crs, query.geometries, distance.label("distance_m"))
                .where(near(src.c.geom, point, reach)).order_by(distance, src.c.fid).limit(query.k))).all()
            counts[spec.id] = len(rows)
            features += [feature(spec, row, ("distance_m",)) for row in rows]
    features.sort(key=lambda f: f["properties"]["distance_m"])
    return answer(collection(features, counts=counts), crs)


@router.post("/within", **GEOJSON_ANSWER)
async def within(query: Within, request: Request) -> Response:
    """Features within `distance` metres of a geometry, or of the features a selector picks
    (each with its distance to the nearest of them), nearest first; `limit` and `offset` page
    through them, `numberMatched` counts them all."""
    crs = parse_crs(query.crs, "body.crs")
    spec = vector_layer(query.layer, "body.layer")
    await require_read(request, [spec.id], "body.layer")
    src = layer_at(spec, query.as_of)
    members = {}
    async with snapshot(request) as conn:
        if query.geometry is not None:
            target = bound(read_geometry(query.geometry, crs, "body.geometry"))
            distance = metres_between(src.c.geom, target)
            statement = (feature_select(spec, src, crs, query.geometries, distance.label("distance_m"))
                         .where(near(src.c.geom, target, query.distance)).order_by(distance, src.c.fid))
        else:
            other = vector_layer(query.of.layer, "body.of.layer")
            await require_read(request, [other.id], "body.of.layer")
            other_src = layer_at(other, query.as_of)
            selected = (select(other_src.c.fid, other_src.c.geom)
                        .where(*conditions(other, other_src, query.of.where, "body.of.where")).subquery("selected"))
            members["selected"] = await conn.scalar(select(func.count()).select_from(selected))
            if not members["selected"]:
                raise ApiError(422, "empty_selection", f"No feature of {other.id} matches {str(query.of.where)[:200]}; "
                               "nothing to measure from.", where="body.of.where")
            # Each pair's distance is measured once, in the join, where one selected feature meets many
            # candidates in a row and PostGIS reuses its prepared geodesic tree (OFFSET 0 keeps it there).
            pairs = (select(src.c.fid, metres_between(src.c.geom, selected.c.geom).label("distance_m"))
                     .select_from(selected.join(src, around(src.c.geom, selected.c.geom, query.distance)))
                     .offset(0).subquery("pairs"))
            hits = (select(pairs.c.fid, func.min(pairs.c.distance_m).label("distance_m"))
                    .where(pairs.c.distance_m <= query.distance).group_by(pairs.c.fid).subquery("hits"))
            statement = (feature_select(spec, src, crs, query.geometries, hits.c.distance_m)
                         .join_from(src, hits, src.c.fid == hits.c.fid).order_by(hits.c.distance_m, src.c.fid))
        page = statement.add_columns(func.count().over().label("matched"))
        rows = (await conn.execute(page.limit(query.limit or MAX_RESULTS + 1).offset(query.offset))).all()
        if rows:
            matched = rows[0].matched
        else:  # past the last page, or nothing at all
            matched = await conn.scalar(select(func.count()).select_from(statement.subquery())) if query.offset else 0
    if query.limit is None and matched - query.offset > MAX_RESULTS:
        raise too_many(matched, "Ask for pages with limit and offset, use a shorter distance or a narrower "
                       "selection, or /query/aggregate for counts.")
    if query.offset + len(rows) < matched:
        members["next"] = {"offset": query.offset + len(rows), "limit": query.limit}
    return answer(collection([feature(spec, row, ("distance_m",)) for row in rows], numberMatched=matched,
                             **members), crs)


def _categories(query: Intersects, specs: list[LayerSpec]) -> dict[str, list[str]]:
    """Fields to count by, per layer: the ones asked for, else the layer's enumerated fields."""
    asked = query.group_by or {}
    for name in asked:
        if name not in [s.id for s in specs]:
            raise ApiError(422, "unknown_layer", f"group_by names {name[:100]!r}, which is not among the layers "
                           "queried.", where=f"body.group_by.{name[:100]}")
    chosen = {}
    for spec in specs:
        fields = asked.get(spec.id, [f.name for f in spec.fields if f.values])
        for name in fields:
            if spec.field(name) is None:
                raise ApiError(422, "unknown_field", f"Layer {spec.id} has no field {name[:100]!r}; its fields: "
                               f"{', '.join(f.name for f in spec.fields)}.", where=f"body.group_by.{spec.id}")
        chosen[spec.id] = list(dict.fromkeys(fields))
    return chosen


@router.post("/intersects", **GEOJSON_ANSWER)
async def intersects(query: Intersects, request: Request) -> Response:
    """Features of the layers intersecting a polygon, with counts per layer and per category."""
    crs = parse_crs(query.crs, "body.crs")
    area = bound(read_geometry(query.geometry, crs, "body.geometry", {"Polygon", "MultiPolygon"}))
    specs = vector_layers_named(query.layers, "body.layers")
    await require_read(request, [s.id for s in specs], "body.layers")
    categories = _categories(query, specs)
    summary, features = {}, []
    async with snapshot(request) as conn:
        for spec in specs:
            src = layer_at(spec, query.as_of)
            inside = func.ST_Intersects(src.c.geom, area)
            counts = {}
            for name in categories[spec.id]:
                n = func.count().label("n")
                rows = await conn.execute(select(src.c[name].label("value"), n).where(inside)
                                          .group_by(src.c[name]).order_by(n.desc(), src.c[name]))
                counts[name] = [{"value": row.value, "count": row.n} for row in rows]
            summary[spec.id] = {"count": await conn.scalar(select(func.count()).select_from(src).where(inside)),
                                "by": counts}
        total = sum(s["count"] for s in summary.values())
        if query.features and total > MAX_RESULTS:
            raise too_many(total, "Send features=false for the counts alone, or draw a smaller polygon.")
        for spec in specs if query.features else []:
            src = layer_at(spec, query.as_of)
            rows = await conn.execute(feature_select(spec, src, crs, query.geometries)
                                      .where(func.ST_Intersects(src.c.geom, area)).order_by(src.c.fid))
            features += [feature(spec, row) for row in rows]
    return answer(collection(features, summary=summary), crs)


@router.post("/at", **GEOJSON_ANSWER)
async def at(query: At, request: Request) -> Response:
    """The features of polygon layers (all of them unless named) that contain the point."""
    crs = parse_crs(query.crs, "body.crs")
    point = bound(read_geometry(query.point, crs, "body.point", {"Point"}))
    if query.layers is not None:
        specs = vector_layers_named(query.layers, "body.layers", POLYGONS)
        await require_read(request, [s.id for s in specs], "body.layers")
    else:  # every polygon layer the caller may read
        hidden = await hidden_layers(request)
        specs = [s for s in vector_layers() if s.geometry in POLYGONS and s.id not in hidden]
    features = []
    async with snapshot(request) as conn:
        for spec in specs:
            src = layer_at(spec, query.as_of)
            rows = await conn.execute(feature_select(spec, src, crs, query.geometries)
                                      .where(func.ST_Intersects(src.c.geom, point)).order_by(src.c.fid))
            features += [feature(spec, row) for row in rows]
    return answer(collection(features), crs)


def _figure_key(measure: str, value) -> str:
    return f"{measure}:{'null' if value is None else value}"


@router.post("/aggregate", **GEOJSON_ANSWER)
async def aggregate(query: Aggregate, request: Request) -> Response:
    """A layer's features counted (and a numeric field summed) per polygon of another layer,
    optionally split by a field: the polygons come back with the figures as flat properties
    (`count`, `sum`, `count:<value>`, `sum:<value>`), zero where nothing falls, ready for a choropleth."""
    crs = parse_crs(query.crs, "body.crs")
    spec = vector_layer(query.layer, "body.layer")
    by = vector_layer(query.by, "body.by", POLYGONS)
    await require_read(request, [spec.id], "body.layer")
    await require_read(request, [by.id], "body.by")
    if by.id == spec.id:
        raise ApiError(422, "same_layer", "layer and by must be different layers.", where="body.by")
    for role, name, kinds in (("group_by", query.group_by, None), ("sum", query.sum, {"integer", "real"})):
        field = spec.field(name) if name else None
        if name and (field is None or (kinds and field.type not in kinds)):
            wanted = "numeric fields" if kinds else "fields"
            options = [f.name for f in spec.fields if not kinds or f.type in kinds]
            raise ApiError(422, "unknown_field", f"{name[:100]!r} is not one of {spec.id}'s {wanted}: "
                           f"{', '.join(options)}.", where=f"body.{role}")
    src, polygons = layer_at(spec, query.as_of), layer_at(by, query.as_of)
    where = conditions(spec, src, query.where, "body.where")
    async with snapshot(request) as conn:
        rows = (await conn.execute(feature_select(by, polygons, crs, query.geometries)
                                   .order_by(polygons.c.fid).limit(MAX_RESULTS + 1))).all()
        if len(rows) > MAX_RESULTS:
            raise too_many(len(rows), f"{by.id} has too many polygons to map at once.")
        tallies = await aggregation.figures(conn, spec, src, polygons, query.group_by, query.sum, where)
    names = ["count", *(["sum"] if query.sum else [])]
    groups = sorted({t.value for t in tallies} if query.group_by else set(), key=lambda v: (v is None, str(v)))
    zero = dict.fromkeys(names, 0) | {_figure_key(m, g): 0 for g in groups for m in names}
    polygons_out = {row.fid: feature(by, row) for row in rows}
    for f in polygons_out.values():
        f["properties"] |= zero
    for t in tallies:
        properties = polygons_out[t.polygon]["properties"]
        for m in names:
            value = getattr(t, m) or 0
            properties[m] += value
            if query.group_by:
                properties[_figure_key(m, t.value)] = value
    return answer(collection(list(polygons_out.values()), layer=spec.id, by=by.id, group_by=query.group_by,
                             sum=query.sum, groups=groups), crs)


@router.post("/trace", response_class=Response, responses={200: {
    "content": {"application/json": {}}, "description": "The traced reaches, with the sources and stations on them"}})
async def trace(query: Trace, request: Request) -> Response:
    """The river reaches up- or downstream of a point, up to a distance along the rivers, with
    the pollution sources within `buffer` metres of them and the monitoring stations on them."""
    crs = parse_crs(query.crs, "body.crs")
    if query.feature is not None:  # the drainage network, from a feature (layers.drainage_answer)
        await require_read(request, [vector_layer(query.feature.layer, "body.feature.layer").id], "body")
        hidden = await hidden_layers(request)
        async with request.app.state.engine.begin() as conn:
            await drainage_graph.refresh(conn)
        async with snapshot(request, writable=query.as_of is not None) as conn:  # a past network: temporary tables
            past = None if query.as_of is None else await drainage_graph.build_at(conn, query.as_of)
            body = await drainage_answer.body(conn, query, crs, hidden, past)
        return answer(body, crs, media_type="application/json")
    point = bound(read_geometry(query.point, crs, "body.point", {"Point"}))
    await require_read(request, [network.river_layer().id], "body")
    hidden = await hidden_layers(request)  # sources or stations the caller may not read are left out
    async with snapshot(request) as conn:
        body = await network.trace(conn, point, query, crs, hidden)
    if body is None:
        raise ApiError(422, "no_river_nearby", f"No river within {query.snap:g} m of the point; move it onto a "
                       "river or raise snap.", where="body.point")
    return answer(body, crs, media_type="application/json")
