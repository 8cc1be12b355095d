"""The tile fast path: public tiles answered in front of the framework.

`TileFastPath` wraps the app (tiles.server.in_front), so it runs before any of the framework's own
layers, the app's middleware or its router. A GET of a tile URL (tiles.request.tile_path) that anyone
may have is answered here: a hit at once, with its ETag/304 logic, from response heads encoded once
per tile content and caching policy; a miss rendered and cached by the same functions as the routes
(tiles.request's parser, `TileProvider.answer`, twin.errors' answers) under the request deadline.
Any other request goes on to the app, whose routes do the same behind its middleware: a tile the
caller's key must be checked for, a tile asked from an origin that only CORSMiddleware can judge (a
list of allowed origins), anything not a GET of a tile URL. A hit needs no validation: only tiles
that passed it are cached. It is plain ASGI, so it runs under any ASGI server, and the server writes
the access log line of its answers as of any other.

Private layers (twin.access): a tile of one always goes to the routes, which check the caller's
key first; a composite tile is served here to callers without a key only, under the cache key of
the tile drawn without any private layer. While the access switches are not followed live, nothing
is served here.
"""

from typing import NamedTuple
from urllib.parse import parse_qsl

from tiles.cache import CachedTile, cache_key
from tiles.provider import TileProvider
from tiles.request import tile_path, tile_request
from tiles.responses import encoded, matches, tile_response
from twin import cors
from twin.access import LayerAccess
from twin.errors import ApiError, deadline, error_response, nul_in
from twin.settings import Settings

ENCODED_HEADS = 100_000  # tiles whose encoded response heads are kept (then all are dropped at once)
PUBLIC = "twin.public_tile"  # in the scope of a miss answered here: its PublicTile


class PublicTile(NamedTuple):
    """A GET of a tile anyone may have, as the fast path answers it."""
    path: dict[str, str]  # tiles.request.tile_path's parameters
    key: str  # in the caches
    hidden: frozenset[str]  # the private layers a composite tile leaves out
    cross_origin: list[tuple[bytes, bytes]]  # CORS headers to send with it


class PublicTiles:
    def __init__(self, access: LayerAccess, origins: list[str], provider: TileProvider, settings: Settings):
        self.access, self.origins, self.provider, self.memory = access, origins, provider, provider.memory
        self.miss = deadline(self._miss, settings)  # the ASGI app of a miss whose scope holds its PublicTile
        self._heads: dict[tuple[str, str], tuple] = {}  # (etag, cache-control) → each answer, headers encoded

    def public(self, scope: dict) -> PublicTile | None:
        """The public tile a GET asks for, or None when the app must answer."""
        path, query = scope["path"], scope["query_string"]
        params = tile_path(path)
        if params is None or not self.access.live or nul_in(path, query):  # the app answers a NUL with a 400
            return None
        headers = scope["headers"]
        cross_origin = cors.simple_headers(self.origins, headers)
        if cross_origin is None:
            return None
        private, layer = self.access.private(), params.get("layer")
        if layer in private:
            return None
        if layer is None and private and any(name == b"authorization" for name, _ in headers):
            return None
        hidden = private if layer is None else frozenset()
        return PublicTile(params, cache_key(path, query, hidden), hidden, encoded(cross_origin) if cross_origin else [])

    def hit(self, tile: CachedTile, if_none_match: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        both = self._heads.get((tile.etag, tile.cache_control))
        if both is None:
            if len(self._heads) >= ENCODED_HEADS:
                self._heads.clear()
            both = self._heads[tile.etag, tile.cache_control] = tuple(
                (status, encoded(headers), body)
                for status, headers, body in (tile_response(tile, None, "hit"), tile_response(tile, tile.etag, "hit")))
        return both[matches(if_none_match, tile.etag)]

    async def serve(self, tile: PublicTile, scope, receive, send) -> None:
        cached = self.memory.get(tile.key)
        if cached is None:
            scope[PUBLIC] = tile
            return await self.miss(scope, receive, send)
        status, headers, body = self.hit(cached, _if_none_match(scope["headers"]))
        await send({"type": "http.response.start", "status": status,
                    "headers": headers + tile.cross_origin if tile.cross_origin else headers})
        await send({"type": "http.response.body", "body": body})

    async def _miss(self, scope, receive, send) -> None:
        tile: PublicTile = scope[PUBLIC]
        keep = None
        try:
            status, headers, body, keep = await self.provider.answer(
                tile.key, lambda: tile_request(tile.path, _query(scope["query_string"]), tile.hidden),
                _if_none_match(scope["headers"]))
            headers = encoded(headers)
        except ApiError as e:
            error = error_response(e)
            status, headers, body = error.status_code, error.headers.raw, error.body
        await send({"type": "http.response.start", "status": status, "headers": headers + tile.cross_origin})
        await send({"type": "http.response.body", "body": body})
        if keep:
            await keep()


def _query(query_string: bytes) -> dict[str, str]:
    """The query as the routes read it: of a repeated parameter the last counts."""
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def _if_none_match(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"if-none-match":
            return value.decode("latin-1")
    return None


class TileFastPath:
    def __init__(self, app, tiles: PublicTiles):
        self.app, self.tiles = app, tiles

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            tile = self.tiles.public(scope)
            if tile is not None:
                return await self.tiles.serve(tile, scope, receive, send)
        await self.app(scope, receive, send)
