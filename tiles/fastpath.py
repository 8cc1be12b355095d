"""The warm fast path: a pure ASGI middleware that answers cached tiles before routing.

It matches the tile URLs, looks the key up and, on a hit, sends the tile (or a 304) at once;
anything else, misses included, goes on to the router, which renders, validates and caches.
"""

import re

from tiles.cache import TileCache, cache_key
from tiles.responses import tile_response

TILE_PATH = re.compile(r"^/(collections/[^/]+/tiles|tiles/onemap)/[^/]+/\d+/\d+/\d+$")


class TileFastPath:
    def __init__(self, app, cache: TileCache):
        self.app, self.cache = app, cache

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and TILE_PATH.match(scope["path"]):
            tile = self.cache.get(cache_key(scope["path"], scope["query_string"]))
            if tile is not None:
                if_none_match = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"), None)
                status, headers, body = tile_response(tile, if_none_match, "hit")
                await send({"type": "http.response.start", "status": status,
                            "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
