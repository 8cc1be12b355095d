"""Features of a layer as GeoJSON (OGC API Features Parts 1-3): items, one item, queryables.

PostgreSQL writes the JSON: each feature is one json_build_object with ST_AsGeoJSON for its
geometry, the page is one string_agg, and the count of matches (up to a bound past the page:
`TWIN_ITEMS_COUNT_LIMIT`) comes in the same statement, so a page is one round trip and Python only
wraps it. water_quality readings have no
geometry of their own and are served with "geometry": null (join monitoring_stations by
station_code for locations). The whole layer's count is read from `twin.feature_count`, which the
database keeps, so an unfiltered page reports an exact `numberMatched` at any size.
"""

import operator
from datetime import datetime, timezone
from functools import reduce
from itertools import chain
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import JSON, BigInteger, Text, case, cast, func, literal, null, select, union_all
from sqlalchemy.dialects.postgresql import aggregate_order_by

from layers import crs as crs_
from layers import html, params, queryables
from layers.catalog import LayerSpec
from layers.collections import layer_or_404
from layers.edits import etag_of
from layers.filters import Filter
from layers.statements import fetch_one
from layers.tables import current, feature_count, parts, source
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["features"])
GEOJSON = "application/geo+json"


async def feature_layer(layer: str) -> LayerSpec:
    """A layer that has features (vector or series); 404 otherwise."""
    spec = layer_or_404(layer)
    if spec.kind == "raster":
        raise ApiError(404, "not_a_feature_layer", f"Layer '{layer}' is raster: it has tiles, not items. "
                       f"See /raster/{layer}/", where="path.layer")
    return spec


def time_field(spec: LayerSpec) -> str | None:
    """The property `datetime` selects on: the layer's time_field, else its only date/time field."""
    if spec.time_field:
        return spec.time_field
    temporal = [f.name for f in spec.fields if f.type in ("date", "timestamptz")]
    return temporal[0] if len(temporal) == 1 else None


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


def _feature(spec: LayerSpec, columns, names: list[str], out: crs_.Crs):
    """One feature's GeoJSON as a json expression."""
    properties = func.json_build_object(*chain.from_iterable((literal(n, Text), _json_value(spec, columns, n))
                                                             for n in names))
    geometry = (cast(func.ST_AsGeoJSON(crs_.output(columns.geom, out), out.decimals, 0), JSON)
                if spec.geometry else null())
    return func.json_build_object(literal("type", Text), literal("Feature", Text), literal("id", Text), columns.fid,
                                  literal("geometry", Text), geometry, literal("properties", Text), properties)


def _where(spec: LayerSpec, columns, box, moment, cql: Filter | None) -> list:
    clauses = []
    if box is not None:
        if not spec.geometry:
            raise ApiError(400, "invalid_parameter", f"Layer '{spec.id}' has no geometry to filter by bbox",
                           where="query.bbox")
        clauses.append(box.intersects(columns.geom))
    if moment is not None:
        name = time_field(spec)
        if name is None:
            raise ApiError(400, "invalid_parameter", f"Layer '{spec.id}' has no temporal property for datetime",
                           where="query.datetime")
        clauses.append(moment.clause(columns[name]))
    if cql is not None:
        clauses.append(cql.clause(spec, columns))
    return clauses


def _cut(columns, where: list, keys: list[tuple[str, bool]], names: list[str], spec: LayerSpec):
    """The matching rows' plain columns (sort keys as sort_0…, fid, properties, geometry) in page order."""
    sort = [columns[name].label(f"sort_{i}") for i, (name, _) in enumerate(keys)]
    carried = [columns.fid, *(columns[n] for n in names), *([columns.geom] if spec.geometry else [])]
    return (select(*sort, *carried).where(*where)
            .order_by(*(columns[n].desc() if desc else columns[n] for n, desc in keys), columns.fid))


def _url(request: Request, **changes) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    query += [(k, str(v)) for k, v in changes.items()]
    return f"{base_url(request)}{request.url.path}?{urlencode(query)}"


def _links(request: Request, spec: LayerSpec, page: params.Page, matched: int | None, returned: int) -> list[dict]:
    collection = f"{base_url(request)}/collections/{spec.id}"
    links = [{"rel": "self", "type": GEOJSON, "href": _url(request)},
             {"rel": "collection", "type": "application/json", "href": collection}]
    if matched is None or page.offset + returned < matched:
        links.append({"rel": "next", "type": GEOJSON,
                      "href": _url(request, offset=page.offset + page.limit, limit=page.limit)})
    if page.offset > 0:
        links.append({"rel": "prev", "type": GEOJSON,
                      "href": _url(request, offset=max(page.offset - page.limit, 0), limit=page.limit)})
    return links


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@router.get("/collections/{layer}/items", response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A GeoJSON FeatureCollection"}})
async def items(
    request: Request,
    spec: LayerSpec = Depends(feature_layer),
    page: params.Page = Depends(params.page),
    box: params.BBox | None = Depends(params.bbox),
    out: crs_.Crs = Depends(params.output_crs),
    moment: params.Period | None = Depends(params.period),
    cql: Filter | None = Depends(params.cql_filter),
    wanted: params.Properties = Depends(params.properties),
    order: params.SortBy = Depends(params.sortby),
    as_of: datetime | None = Depends(params.as_of),
):
    # as of a moment, the layer is two disjoint parts (current rows, superseded versions), each cut and
    # counted on its own, then merged: the planner does not push an order or a limit into a union
    pieces = [current(spec)] if as_of is None else [p.subquery(f"part_{i}") for i, p in enumerate(parts(spec, as_of))]
    wheres = [_where(spec, piece.c, box, moment, cql) for piece in pieces]
    keys = order.checked(spec)
    names = wanted.fields(spec)
    # the page is cut from plain columns; JSON is written only for its rows, not for the skipped ones
    if as_of is None:
        rows = _cut(pieces[0].c, wheres[0], keys, names, spec).limit(page.limit).offset(page.offset).subquery("page")
    else:
        both = union_all(*(_cut(piece.c, where, keys, names, spec).limit(page.offset + page.limit)
                           for piece, where in zip(pieces, wheres))).subquery("parts")
        rows = (select(*both.c).order_by(*(both.c[f"sort_{i}"].desc() if desc else both.c[f"sort_{i}"]
                                           for i, (_, desc) in enumerate(keys)), both.c.fid)
                .limit(page.limit).offset(page.offset).subquery("page"))
    sort = [rows.c[f"sort_{i}"] for i in range(len(keys))]
    page_order = [c.desc() if desc else c for c, (_, desc) in zip(sort, keys)]
    feature = cast(_feature(spec, rows.c, names, out), Text)
    agg = select(func.count().label("returned"),
                 func.string_agg(feature, aggregate_order_by(literal(",", Text), *page_order, rows.c.fid))
                 .label("features")).subquery("agg")
    if as_of is None and not wheres[0]:  # the whole layer now: its count is kept by the database
        counted_to = None
        matched = (select(feature_count.c.features).where(feature_count.c.layer == spec.id).scalar_subquery())
    else:  # each part's matches counted up to the bound: past it in either, the sum reaches the bound too
        counted_to = page.offset + page.limit + request.app.state.settings.items_count_limit
        matched = reduce(operator.add, [
            select(func.count()).select_from(select(piece.c.fid).where(*where).limit(counted_to).subquery())
            .scalar_subquery() for piece, where in zip(pieces, wheres)])
    statement = select(matched.label("matched"), agg.c.returned, agg.c.features)
    async with request.app.state.read_engine.connect() as conn:
        row = await fetch_one(conn, statement)
    matched = row.matched if counted_to is None or row.matched < counted_to else None
    counts = {"numberReturned": row.returned} if matched is None else {"numberMatched": matched,
                                                                        "numberReturned": row.returned}
    head = orjson.dumps({"type": "FeatureCollection", **counts, "timeStamp": _now(),
                         "links": _links(request, spec, page, matched, row.returned)})
    body = head[:-1] + b',"features":[' + (row.features or "").encode() + b"]}"
    if html.wanted(request):
        return html.page("items.html", base=base_url(request), spec=spec, names=names, body=orjson.loads(body))
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": out.header})


@router.get("/collections/{layer}/items/{fid}", response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A GeoJSON Feature"}})
async def item(
    fid: str,
    request: Request,
    spec: LayerSpec = Depends(feature_layer),
    out: crs_.Crs = Depends(params.output_crs),
    wanted: params.Properties = Depends(params.properties),
    as_of: datetime | None = Depends(params.as_of),
):
    missing = ApiError(404, "unknown_feature", f"Layer '{spec.id}' has no feature {fid[:40]!r}"
                       + (f" as of {as_of.isoformat()}" if as_of else ""), where="path.fid")
    if not fid.isdigit() or int(fid) >= 2**63:
        raise missing
    columns = source(spec, as_of).c
    statement = select(cast(_feature(spec, columns, wanted.fields(spec), out), Text), columns.version).where(
        columns.fid == int(fid))
    async with request.app.state.read_engine.connect() as conn:
        row = await fetch_one(conn, statement)
    if row is None:
        raise missing
    collection = f"{base_url(request)}/collections/{spec.id}"
    links = orjson.dumps([{"rel": "self", "type": GEOJSON, "href": _url(request)},
                          {"rel": "collection", "type": "application/json", "href": collection}])
    body = row[0].encode()[:-1] + b', "links" : ' + links + b"}"
    if html.wanted(request):
        return html.page("item.html", base=base_url(request), spec=spec, body=orjson.loads(body))
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": out.header,
                                                       "ETag": etag_of(spec.id, int(fid), row[1])})


@router.get("/collections/{layer}/queryables", response_class=Response,
            responses={200: {"content": {"application/schema+json": {}}}})
async def layer_queryables(request: Request, spec: LayerSpec = Depends(feature_layer)):
    url = f"{base_url(request)}/collections/{spec.id}/queryables"
    # a client that accepts plain JSON only (GDAL's OAPIF driver) gets the same document as application/json
    accept = request.headers.get("accept", "")
    plain = "application/json" in accept and "application/schema+json" not in accept
    return Response(orjson.dumps(queryables.schema(spec, url)),
                    media_type="application/json" if plain else "application/schema+json")
