"""Vector tile routes: a layer's tiles (OGC API Tiles) and the composite one-map tile.

Out of a layer's zoom range (catalog minzoom/maxzoom) a layer tile is a 404 with the reason,
as OGC API Tiles asks for tiles outside the tileset's limits (published in its metadata); the
composite tile simply leaves out the layers not visible at its zoom. A tile with no features is
a 204.
"""

from datetime import datetime

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask

from layers.catalog import LayerSpec
from layers.filters import Filter
from layers.params import Properties, as_of, cql_filter, properties
from tiles.cache import cache_key
from tiles.params import tile_address, vector_layer
from tiles.request import tile_request
from tiles.responses import MVT
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


async def serve(request: Request, hidden: frozenset[str] = frozenset()) -> Response:
    """The tile, from the caches or rendered (public tiles are answered before routing: tiles.fastpath)."""
    key = cache_key(request.scope["path"], request.scope["query_string"], hidden)
    status, headers, body, keep = await request.app.state.tile_provider.answer(
        key, lambda: tile_request(request.path_params, request.query_params, hidden),
        request.headers.get("if-none-match"))
    return Response(body, status_code=status, headers=headers, background=keep and BackgroundTask(keep))


async def layer_tile_route(request: Request, spec: LayerSpec = Depends(vector_layer),
                           tile: TileAddress = Depends(tile_address), selected: Properties = Depends(properties),
                           moment: datetime | None = Depends(as_of), where: Filter | None = Depends(cql_filter)):
    return await serve(request)


async def onemap_tile_route(request: Request, tile: TileAddress = Depends(tile_address),
                            layers: str | None = Query(None, description="Comma-separated layers (default: every "
                                                       "vector layer visible at this zoom)"),
                            moment: datetime | None = Depends(as_of)):
    return await serve(request, await hidden_layers(request))


def install(app: FastAPI) -> None:
    """The tile routes, first on the app's own router: most requests are tiles, and matching one through an
    included router cost about 40 µs more, and after FastAPI's four documentation routes 10 µs more."""
    documentation = list(app.router.routes)
    for path, endpoint, summary in (
            ("/collections/{layer}/tiles/{tms}/{z}/{y}/{x}", layer_tile_route,
             "A vector tile of a layer (Mapbox Vector Tile)"),
            ("/tiles/onemap/{tms}/{z}/{y}/{x}", onemap_tile_route,
             "The one-map tile: one MVT layer per catalog layer")):
        app.router.add_api_route(path, endpoint, methods=["GET"], route_class_override=TileRoute, tags=["tiles"],
                                 responses=TILE_RESPONSES, response_class=Response, summary=summary)
    app.router.routes[:] = [*app.router.routes[len(documentation):], *documentation]
