"""The tile fast path: the outermost ASGI middleware, which answers a cached tile before anything else runs.

A hit goes out at once, with its ETag/304 logic, and no other middleware, router, dependency
injection or Response object in the way (they cost several times the hit itself). Everything else —
a miss, a tile the caller's key must be checked for, any request that is not a plain GET of a tile
URL — goes on to the app, whose routes validate, render and cache (tiles.routes). A hit needs no
validation: only tiles that passed it are ever cached.

Private layers (twin.access): a tile of one always goes to the routes, which check the caller's
key first; a composite tile is served here to callers without a key only, under the cache key of
the tile drawn without any private layer. While the access switches are not followed live, nothing
is served here.
"""

import re

from tiles.cache import cache_key
from tiles.provider import TileProvider
from tiles.responses import tile_response

TILE_PATH = re.compile(r"^/(?:collections/(?P<layer>[^/]+)/tiles|tiles/onemap)/[^/]+/[0-9]+/[0-9]+/[0-9]+$")


class TileFastPath:
    def __init__(self, app, provider: TileProvider):
        self.app, self.provider = app, provider

    def _cached(self, scope):
        match = TILE_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        access = scope["app"].state.access if match else None
        if access is None or not access.live:
            return None
        private, layer = access.private(), match.group("layer")
        if layer in private:
            return None
        if layer is None and private and any(k == b"authorization" for k, _ in scope["headers"]):
            return None
        return self.provider.memory.get(cache_key(scope["path"], scope["query_string"],
                                                  private if layer is None else frozenset()))

    async def __call__(self, scope, receive, send):
        tile = self._cached(scope)
        if tile is None:
            return await self.app(scope, receive, send)
        if_none_match = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"), None)
        status, headers, body = tile_response(tile, if_none_match, "hit")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body})
