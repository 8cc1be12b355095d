"""Features of a layer as GeoJSON (OGC API Features Parts 1-3): items, one item, queryables.

The features and their count come from the feature store (`layers.features`) as GeoJSON text that
PostgreSQL wrote; this module only wraps them with links. water_quality readings have no geometry of
their own and are served with "geometry": null (join monitoring_stations by station_code for locations).
"""

from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Request, Response

from layers import crs as crs_
from layers import features, html, params, queryables
from layers.catalog import LayerSpec
from layers.collections import layer_or_404
from layers.filters import Filter
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
    selection = features.Selection(spec, wanted.fields(spec), out, box, moment, cql, as_of)
    found = await features.page(request.app.state.read_engine, selection, page, order.checked(spec),
                                request.app.state.settings.items_count_limit)
    matched = found.matched
    counts = {"numberReturned": found.returned} if matched is None else {"numberMatched": matched,
                                                                          "numberReturned": found.returned}
    head = orjson.dumps({"type": "FeatureCollection", **counts, "timeStamp": _now(),
                         "links": _links(request, spec, page, matched, found.returned)})
    body = head[:-1] + b',"features":[' + found.features.encode() + b"]}"
    if html.wanted(request):
        return html.page("items.html", base=base_url(request), spec=spec, names=selection.names,
                         body=orjson.loads(body))
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
    found = await features.feature(request.app.state.read_engine,
                                   features.Selection(spec, wanted.fields(spec), out, as_of=as_of), int(fid))
    if found is None:
        raise missing
    text, version = found
    collection = f"{base_url(request)}/collections/{spec.id}"
    links = orjson.dumps([{"rel": "self", "type": GEOJSON, "href": _url(request)},
                          {"rel": "collection", "type": "application/json", "href": collection}])
    body = text.encode()[:-1] + b', "links" : ' + links + b"}"
    if html.wanted(request):
        return html.page("item.html", base=base_url(request), spec=spec, body=orjson.loads(body))
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": out.header,
                                                       "ETag": features.etag_of(spec.id, int(fid), version)})


@router.get("/collections/{layer}/queryables", response_class=Response,
            responses={200: {"content": {"application/schema+json": {}}}})
async def layer_queryables(request: Request, spec: LayerSpec = Depends(feature_layer)):
    url = f"{base_url(request)}/collections/{spec.id}/queryables"
    # a client that accepts plain JSON only (GDAL's OAPIF driver) gets the same document as application/json
    accept = request.headers.get("accept", "")
    plain = "application/json" in accept and "application/schema+json" not in accept
    return Response(orjson.dumps(queryables.schema(spec, url)),
                    media_type="application/json" if plain else "application/schema+json")
