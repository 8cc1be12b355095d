"""OGC API landing page, conformance and the collections (the layer catalog)."""

from fastapi import APIRouter, Request

from layers import crs, html
from layers.catalog import LayerSpec, catalog, get_layer
from layers.extents import extent
from twin.access import hidden_layers
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["collections"])

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    *(f"http://www.opengis.net/spec/cql2/1.0/conf/{c}" for c in (
        "cql2-text", "cql2-json", "basic-cql2", "advanced-comparison-operators", "case-insensitive-comparison",
        "basic-spatial-functions", "basic-spatial-functions-plus", "spatial-functions", "temporal-functions")),
    *(f"http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/{c}" for c in (
        "create-replace-delete", "update", "optimistic-locking-etags")),
    *(f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{c}" for c in (
        "core", "tileset", "tilesets-list", "geodata-tilesets", "mvt", "png", "jpeg")),
]
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@router.get("/")
async def landing(request: Request):
    base = base_url(request)
    body = {
        "title": "OneMap Twin — 无锡新吴区一张图",
        "description": "Digital-twin map of Wuxi Xinwu: layers as OGC API Features and tiles, with history.",
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base}/"},
            {"rel": "service-desc", "type": "application/vnd.oai.openapi+json;version=3.0", "href": f"{base}/api"},
            {"rel": "service-doc", "type": "text/html", "href": f"{base}/docs"},
            {"rel": "conformance", "type": "application/json", "href": f"{base}/conformance"},
            {"rel": "data", "type": "application/json", "href": f"{base}/collections"},
            {"rel": "alternate", "type": "text/html", "href": f"{base}/?f=html"},
        ],
    }
    return html.page("landing.html", base=base, body=body) if html.wanted(request) else body


@router.get("/conformance")
async def conformance():
    return {"conformsTo": CONFORMANCE}


def layer_or_404(layer_id: str) -> LayerSpec:
    spec = get_layer(layer_id)
    if spec is None:
        raise ApiError(404, "unknown_layer", f"No layer '{layer_id}'. See /collections for the catalog.",
                       where="path.layer")
    return spec


async def _extent(request: Request, spec: LayerSpec) -> dict:
    found, described = await extent(request, spec), {}
    if found.bbox:
        described["spatial"] = {"bbox": [list(found.bbox)], "crs": CRS84}
    if found.interval:
        described["temporal"] = {"interval": [[moment.isoformat() for moment in found.interval]],
                                 "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}
    return described


async def _describe(request: Request, spec: LayerSpec) -> dict:
    base = f"{base_url(request)}/collections/{spec.id}"
    description = {
        "id": spec.id,
        "title": spec.title.zh,
        "description": spec.title.en,
        "itemType": "feature" if spec.kind != "raster" else "coverage",
        "links": [{"rel": "self", "type": "application/json", "href": base}],
        "twin:kind": spec.kind,
        "twin:group": spec.group,
        "twin:department": spec.department,
        "twin:zoom": [spec.minzoom, spec.maxzoom],
    }
    if spec.kind != "raster":
        description["links"].append({"rel": "items", "type": "application/geo+json", "href": f"{base}/items"})
        description["links"].append({"rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                                     "type": "application/schema+json", "href": f"{base}/queryables"})
        # the draft's rel, which GDAL's OAPIF driver follows to learn which properties a filter may name
        description["links"].append({"rel": "queryables", "type": "application/schema+json",
                                     "href": f"{base}/queryables"})
        description["extent"] = await _extent(request, spec)
        description["crs"] = list(crs.SUPPORTED) if spec.geometry else [CRS84]
        if spec.geometry:
            description["storageCrs"] = crs.STORAGE.uri
            description["links"].append({"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
                                         "type": "application/json", "href": f"{base}/tiles"})
    return description


@router.get("/collections")
async def collections(request: Request):
    hidden = await hidden_layers(request)  # private layers the caller may not read are not listed
    described = [await _describe(request, spec) for spec in catalog().values() if spec.id not in hidden]
    base = base_url(request)
    body = {"links": [{"rel": "self", "type": "application/json", "href": f"{base}/collections"}],
            "collections": described}
    return html.page("collections.html", base=base, body=body) if html.wanted(request) else body


@router.get("/collections/{layer}")
async def collection(layer: str, request: Request):
    spec = layer_or_404(layer)
    body = await _describe(request, spec)
    return html.page("collection.html", base=base_url(request), body=body) if html.wanted(request) else body
