"""Vector tile routes: a layer's tiles (OGC API Tiles) and the composite one-map tile.

Out of a layer's zoom range (catalog minzoom/maxzoom) a layer tile is a 404 with the reason,
as OGC API Tiles asks for tiles outside the tileset's limits (published in its metadata); the
composite tile simply leaves out the layers not visible at its zoom. A tile with no features is
a 204.
"""

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response

from layers.catalog import LayerSpec
from layers.filters import Filter
from layers.params import Properties, as_of, cql_filter, properties
from tiles.cache import CachedTile, cache_key, etag_of
from tiles.params import is_past, onemap_layers, tile_address, vector_layer
from tiles.responses import MVT, tile_response
from tiles.settings import tile_settings
from tiles.sources import LayerRequest, tile_statement
from tiles.tms import TileAddress
from twin.errors import ApiError

router = APIRouter(tags=["tiles"])
TILE_RESPONSES = {200: {"content": {MVT: {}}, "description": "The tile"}, 204: {"description": "No features here"},
                  304: {"description": "Not modified (If-None-Match)"}}


async def serve(request: Request, requests: list[LayerRequest], tile: TileAddress, moment: datetime | None) -> Response:
    """The tile from the cache, or rendered in one database round trip and cached."""
    settings = tile_settings()
    cache = request.app.state.tile_cache
    key = cache_key(request.scope["path"], request.scope["query_string"])
    if_none_match = request.headers.get("if-none-match")
    cached = cache.get(key)
    if cached is None:
        names = tuple(r.spec.id for r in requests)
        mark = cache.generation(names)
        data = b""
        if requests:
            statement = tile_statement(requests, tile, settings)
            async with request.app.state.engine.connect() as conn:
                data = bytes((await conn.execute(statement)).scalar_one())
        control = settings.past_cache_control if is_past(moment) else settings.live_cache_control
        rendered = CachedTile(data, etag_of(data), control, names, tile.tms, tile.z, tile.x, tile.y, moment)
        cache.put(key, rendered, mark)
    status, headers, body = tile_response(cached or rendered, if_none_match, "hit" if cached else "miss")
    return Response(body, status_code=status, headers=headers)


@router.get("/collections/{layer}/tiles/{tms}/{z}/{y}/{x}", responses=TILE_RESPONSES, response_class=Response,
            summary="A vector tile of a layer (Mapbox Vector Tile)")
async def layer_tile(request: Request, spec: LayerSpec = Depends(vector_layer),
                     tile: TileAddress = Depends(tile_address),
                     selected: Properties = Depends(properties), moment: datetime | None = Depends(as_of),
                     where: Filter | None = Depends(cql_filter)):
    if not spec.minzoom <= tile.z <= spec.maxzoom:
        raise ApiError(404, "zoom_out_of_range", f"{spec.id} is drawn at zooms {spec.minzoom}..{spec.maxzoom} "
                       f"only, not at {tile.z}.", where="path.z")
    layer = LayerRequest(spec, tuple(selected.fields(spec)), moment, where)
    return await serve(request, [layer], tile, moment)


@router.get("/tiles/onemap/{tms}/{z}/{y}/{x}", responses=TILE_RESPONSES, response_class=Response,
            summary="The one-map tile: one MVT layer per catalog layer")
async def onemap_tile(request: Request, tile: TileAddress = Depends(tile_address),
                      layers: str | None = Query(None, description="Comma-separated layers (default: every "
                                                 "vector layer visible at this zoom)"),
                      moment: datetime | None = Depends(as_of)):
    chosen = onemap_layers(layers, tile.z)
    requests = [LayerRequest(spec, tuple(f.name for f in spec.fields), moment) for spec in chosen]
    return await serve(request, requests, tile, moment)
