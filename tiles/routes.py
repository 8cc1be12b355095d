"""Vector tile routes: a layer's tiles (OGC API Tiles) and the composite one-map tile.

Public tiles are answered in front of these routes (tiles.fastpath); the routes answer the rest
(private layers after the app-wide key check, twin.access; origins CORSMiddleware must judge; HEAD)
and document the API. Both parse with tiles.request and answer with `TileProvider.answer`.

Out of a layer's zoom range (catalog minzoom/maxzoom) a layer tile is a 404 with the reason,
as OGC API Tiles asks for tiles outside the tileset's limits (published in its metadata); the
composite tile simply leaves out the layers not visible at its zoom. A tile with no features is
a 204.
"""

from fastapi import Depends, FastAPI, Request, Response
from starlette.background import BackgroundTask

from tiles.cache import cache_key
from tiles.request import LAYER_TILE, ONEMAP_TILE, TileRequest, layer_tile_request, onemap_tile_request
from tiles.responses import MVT

TILE_RESPONSES = {200: {"content": {MVT: {}}, "description": "The tile"}, 204: {"description": "No features here"},
                  304: {"description": "Not modified (If-None-Match)"}}


async def answer(request: Request, tile: TileRequest) -> Response:
    """The tile, from the caches or rendered."""
    key = cache_key(request.scope["path"], request.scope["query_string"], tile.hidden)
    status, headers, body, keep = await request.app.state.tile_provider.answer(
        key, lambda: tile, request.headers.get("if-none-match"))
    return Response(body, status_code=status, headers=headers, background=keep and BackgroundTask(keep))


async def layer_tile_route(request: Request, tile: TileRequest = Depends(layer_tile_request)):
    return await answer(request, tile)


async def onemap_tile_route(request: Request, tile: TileRequest = Depends(onemap_tile_request)):
    return await answer(request, tile)


def install(app: FastAPI) -> None:
    for path, endpoint, summary in (
            (LAYER_TILE, layer_tile_route, "A vector tile of a layer (Mapbox Vector Tile)"),
            (ONEMAP_TILE, onemap_tile_route, "The one-map tile: one MVT layer per catalog layer")):
        app.router.add_api_route(path, endpoint, methods=["GET"], tags=["tiles"], responses=TILE_RESPONSES,
                                 response_class=Response, summary=summary)
