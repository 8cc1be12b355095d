"""Tile metadata: the tile matrix sets, a layer's tilesets (OGC API Tiles) and its TileJSON 3.0."""

from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from morecantile import TileMatrixSet

from layers.catalog import LayerSpec
from layers.extents import extent
from layers.filters import Filter
from layers.params import Properties, as_of, cql_filter, properties
from tiles.params import vector_layer
from tiles.sources import POINT_COUNT, field_kinds
from tiles.tms import GRID, SRIDS, grid_or_404, tile_range
from twin.urls import base_url

router = APIRouter(tags=["tiles"])
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
REL = "http://www.opengis.net/def/rel/ogc/1.0"
MVT = "application/vnd.mapbox-vector-tile"
WORLD = (-180.0, -85.0511287798066, 180.0, 85.0511287798066)
DIMENSIONS = {"Point": 0, "MultiPoint": 0, "MultiLineString": 1, "MultiPolygon": 2}


def _matrix_set_link(base: str, tms: str, rel: str = f"{REL}/tiling-scheme") -> dict:
    return {"rel": rel, "type": "application/json", "title": GRID[tms].title or tms,
            "href": f"{base}/tileMatrixSets/{tms}"}


@router.get("/tileMatrixSets", summary="The tile matrix sets tiles are served in")
async def tile_matrix_sets(request: Request):
    base = base_url(request)
    return {"tileMatrixSets": [{"id": tms, "title": GRID[tms].title or tms, "uri": GRID[tms].uri,
                                "crs": str(GRID[tms].crs.root), "links": [_matrix_set_link(base, tms, "self")]}
                               for tms in SRIDS]}


@router.get("/tileMatrixSets/{tms}", summary="A tile matrix set (OGC Two Dimensional Tile Matrix Set 2.0)")
async def tile_matrix_set(tms: str):
    grid: TileMatrixSet = grid_or_404(tms)
    return grid.model_dump(mode="json", exclude_none=True)


async def _bounds(request: Request, spec: LayerSpec) -> tuple[float, float, float, float]:
    """The layer's extent in lon/lat, or the world when it is empty."""
    return (await extent(request, spec)).bbox or WORLD


def _tiles_url(request: Request, spec: LayerSpec, tms: str, template: str) -> str:
    query = {k: v for k, v in request.query_params.items() if k in ("properties", "as_of", "filter", "filter-lang", "filter-crs")}
    suffix = f"?{urlencode(query, safe=',:')}" if query else ""
    return f"{base_url(request)}/collections/{spec.id}/tiles/{tms}/{template}{suffix}"


def _tileset_summary(request: Request, spec: LayerSpec, tms: str) -> dict:
    base = base_url(request)
    grid = GRID[tms]
    registered = {"tileMatrixSetURI": grid.uri} if grid.uri else {}  # CGCS2000Quad is ours: only its link
    return {
        "title": f"{spec.title.zh} ({tms})",
        "dataType": "vector",
        "crs": str(grid.crs.root),
        **registered,
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base}/collections/{spec.id}/tiles/{tms}"},
            _matrix_set_link(base, tms),
            {"rel": "item", "type": MVT, "templated": True,
             "href": _tiles_url(request, spec, tms, "{tileMatrix}/{tileRow}/{tileCol}")},
        ],
    }


@router.get("/collections/{layer}/tiles", summary="A layer's vector tilesets (OGC API Tiles)")
async def tilesets(request: Request, spec: LayerSpec = Depends(vector_layer)):
    base = base_url(request)
    return {"links": [{"rel": "self", "type": "application/json", "href": f"{base}/collections/{spec.id}/tiles"}],
            "tilesets": [_tileset_summary(request, spec, tms) for tms in SRIDS]}


@router.get("/collections/{layer}/tiles/{tms}", summary="A layer's vector tileset (OGC API Tiles)")
async def tileset(request: Request, tms: str, spec: LayerSpec = Depends(vector_layer)):
    grid_or_404(tms)
    west, south, east, north = await _bounds(request, spec)
    limits = []
    for z in range(spec.minzoom, spec.maxzoom + 1):
        x0, y0, x1, y1 = tile_range(tms, z, (west, south, east, north))
        limits.append({"tileMatrix": str(z), "minTileRow": y0, "maxTileRow": y1, "minTileCol": x0, "maxTileCol": x1})
    return _tileset_summary(request, spec, tms) | {
        "boundingBox": {"lowerLeft": [west, south], "upperRight": [east, north], "crs": CRS84},
        "tileMatrixSetLimits": limits,
        "layers": [{"id": spec.id, "title": spec.title.zh, "description": spec.title.en, "dataType": "vector",
                    "geometryDimension": DIMENSIONS[spec.geometry], "minTileMatrix": str(spec.minzoom),
                    "maxTileMatrix": str(spec.maxzoom),
                    "propertiesSchema": {"type": "object", "properties": {
                        name: {"type": kind.lower()} for name, kind in field_kinds(spec).items()}}}],
    }


@router.get("/collections/{layer}/tiles/{tms}/tilejson.json", summary="A layer's TileJSON 3.0")
async def tilejson(request: Request, tms: str, spec: LayerSpec = Depends(vector_layer),
                   selected: Properties = Depends(properties), moment: datetime | None = Depends(as_of),
                   where: Filter | None = Depends(cql_filter)):
    """TileJSON for MapLibre; properties, as_of and filter are validated here and carried into the tile URLs."""
    grid_or_404(tms)
    west, south, east, north = await _bounds(request, spec)
    fields = field_kinds(spec)
    if selected.names is not None:
        kept = {*selected.fields(spec), POINT_COUNT}
        fields = {name: kind for name, kind in fields.items() if name in kept}
    return {
        "tilejson": "3.0.0",
        "name": spec.title.zh,
        "description": spec.title.en,
        "scheme": "xyz",
        "tiles": [_tiles_url(request, spec, tms, "{z}/{y}/{x}")],
        "minzoom": spec.minzoom,
        "maxzoom": spec.maxzoom,
        "bounds": [west, south, east, north],
        "center": [(west + east) / 2, (south + north) / 2, spec.minzoom],
        "vector_layers": [{"id": spec.id, "description": spec.title.zh, "minzoom": spec.minzoom,
                           "maxzoom": spec.maxzoom, "fields": fields}],
    }
