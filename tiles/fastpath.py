"""The tile fast path: a pure ASGI middleware that answers tile requests before routing.

A cached tile goes out at once; a miss is validated (tiles.request), rendered and cached here too,
with no router, dependency injection or Response objects in the way. A request that fails
validation is handed on to the router, whose routes check the same parameters with the same
functions and answer with the JSON error; so do anything that is not a plain GET of a tile URL.

Private layers (twin.access): a tile of one is handed on, for the router to check the caller's key
first; a composite tile is served here to callers without a key only, drawn (and cached) without
any private layer, under a cache key that says so.
"""

import logging
import re
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse

from tiles.cache import cache_key
from tiles.provider import TileProvider
from tiles.request import layer_tile, onemap_tile
from tiles.responses import tile_response
from twin.access import private_layers
from twin.errors import UNAVAILABLE, ApiError, error_body, unavailable

log = logging.getLogger("twin.tiles")
TILE_PATH = re.compile(r"^/(?:collections/(?P<layer>[^/]+)/tiles|tiles/onemap)/(?P<tms>[^/]+)/"
                       r"(?P<z>[0-9]+)/(?P<y>[0-9]+)/(?P<x>[0-9]+)$")


def _asked(match: re.Match, query_string: bytes, hidden: frozenset[str]):
    def ask():
        # as Starlette reads a query: latin-1 bytes, percent-escapes as UTF-8, the last of repeated keys
        query = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        layer, tms, z, y, x = match.group("layer", "tms", "z", "y", "x")
        if layer is None:
            return onemap_tile(tms, int(z), int(y), int(x), query, hidden)
        return layer_tile(layer, tms, int(z), int(y), int(x), query)
    return ask


def _has_key(scope) -> bool:
    return any(k == b"authorization" for k, _ in scope["headers"])


class TileFastPath:
    def __init__(self, app, provider: TileProvider):
        self.app, self.provider = app, provider

    async def __call__(self, scope, receive, send):
        match = TILE_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if match is None:
            return await self.app(scope, receive, send)
        try:
            private, layer = await private_layers(scope["app"]), match.group("layer")
            routed = layer in private or (layer is None and private and _has_key(scope))
            if not routed:  # else the routes check the key first (twin.access)
                hidden = private if layer is None else frozenset()
                tile, state = await self.provider.tile(cache_key(scope["path"], scope["query_string"], hidden),
                                                       _asked(match, scope["query_string"], hidden))
        except ApiError:
            routed = True  # not a valid tile request: the routes answer with the reason
        except UNAVAILABLE as e:
            error = unavailable(e)
            log.warning("503 %s for GET %s (%s: %s)", error.code, scope["path"], type(e).__name__, e)
            response = JSONResponse(error_body(error), status_code=error.status, headers=error.headers)
            return await response(scope, receive, send)
        if routed:
            return await self.app(scope, receive, send)
        if_none_match = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"), None)
        status, headers, body = tile_response(tile, if_none_match, state)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body})
