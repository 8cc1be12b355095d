"""Vector tile routes: a layer's tiles (OGC API Tiles) and the composite one-map tile.

Out of a layer's zoom range (catalog minzoom/maxzoom) a layer tile is a 404 with the reason,
as OGC API Tiles asks for tiles outside the tileset's limits (published in its metadata); the
composite tile simply leaves out the layers not visible at its zoom. A tile with no features is
a 204.
"""

from datetime import datetime

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.routing import APIRoute

from layers.catalog import LayerSpec
from layers.filters import Filter
from layers.params import Properties, as_of, cql_filter, properties
from tiles.cache import cache_key
from tiles.params import tile_address, tile_numbers, vector_layer
from tiles.request import layer_tile, onemap_tile
from tiles.responses import MVT, tile_response
from tiles.tms import TileAddress
from twin.access import hidden_layers, layer_in_path


class TileRoute(APIRoute):
    """A tile route, documented by its endpoint's parameters like any route, but run with the request alone.

    tiles.request checks the same parameters with the same functions straight from the URL, and only
    on a miss (a cached tile has passed them), so FastAPI's per-request solving of the dozen declared
    parameters is skipped: it was the larger part of the framework's time on a cache miss. The
    endpoints read nothing but `request`.
    """

    def get_route_handler(self):
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            await layer_in_path(request)  # the app-wide dependency (twin.app), which this handler skips too
            return await endpoint(request)
        return handler


TILE_RESPONSES = {200: {"content": {MVT: {}}, "description": "The tile"}, 204: {"description": "No features here"},
                  304: {"description": "Not modified (If-None-Match)"}}


async def serve(request: Request, ask, hidden: frozenset[str] = frozenset()) -> Response:
    """The tile, from the caches or rendered (a cached one is usually served before routing: tiles.fastpath)."""
    key = cache_key(request.scope["path"], request.scope["query_string"], hidden)
    tile, state = await request.app.state.tile_provider.tile(key, ask)
    status, headers, body = tile_response(tile, request.headers.get("if-none-match"), state)
    return Response(body, status_code=status, headers=headers)


async def layer_tile_route(request: Request, spec: LayerSpec = Depends(vector_layer),
                           tile: TileAddress = Depends(tile_address), selected: Properties = Depends(properties),
                           moment: datetime | None = Depends(as_of), where: Filter | None = Depends(cql_filter)):
    path, (z, y, x) = request.path_params, tile_numbers(request.path_params)
    return await serve(request, lambda: layer_tile(path["layer"], path["tms"], z, y, x, request.query_params))


async def onemap_tile_route(request: Request, tile: TileAddress = Depends(tile_address),
                            layers: str | None = Query(None, description="Comma-separated layers (default: every "
                                                       "vector layer visible at this zoom)"),
                            moment: datetime | None = Depends(as_of)):
    (z, y, x), hidden = tile_numbers(request.path_params), await hidden_layers(request)
    return await serve(request, lambda: onemap_tile(request.path_params["tms"], z, y, x, request.query_params,
                                                    hidden), hidden)


def install(app: FastAPI) -> None:
    """The tile routes, on the app's own router rather than an included one: matching a request through
    an included router cost about 40 µs more, and most requests are tiles."""
    for path, endpoint, summary in (
            ("/collections/{layer}/tiles/{tms}/{z}/{y}/{x}", layer_tile_route,
             "A vector tile of a layer (Mapbox Vector Tile)"),
            ("/tiles/onemap/{tms}/{z}/{y}/{x}", onemap_tile_route, "The one-map tile: one MVT layer per catalog layer")):
        app.router.add_api_route(path, endpoint, methods=["GET"], route_class_override=TileRoute, tags=["tiles"],
                                 responses=TILE_RESPONSES, response_class=Response, summary=summary)
