"""The tile fast path: public tiles answered before the framework's routing and validation.

A hit goes out at once, with its ETag/304 logic; a miss is rendered and cached right here, by the
same functions as the routes (tiles.request, the provider, twin.errors' answers and deadline); any
other request (a tile the caller's key must be checked for, a CORS origin to check, not a plain GET
of a tile URL) goes on to the app, whose routes do the same behind its middleware. A hit needs no
validation: only tiles that passed it are cached.

Two doors share one test of what is a public tile (`PublicTiles.public`) and one answer (`PublicTiles.answer`):
- `TileProtocol`, the HTTP protocol `twin serve` runs uvicorn with, answers a hit as soon as the
  request's headers are parsed: no ASGI scope, task, middleware, router or Response object (on a
  small tile each of those costs more than the hit itself); a miss runs in uvicorn's request cycle
  straight on `PublicTiles.answer`, outside the app;
- `TileFastPath`, the outermost middleware of the app (inside Starlette's 500 handler), does the same
  for the requests the protocol passed on without looking (pipelined) and for any other server.
Outside the app's middleware, router and Response, a miss costs about 60 µs less (measured in one
process; more on a busy server, whose caches that code also fills). On a real server, uvicorn's
access log line of a tile answered here names the peer's address, not a proxy's X-Forwarded-For.

Private layers (twin.access): a tile of one always goes to the routes, which check the caller's
key first; a composite tile is served here to callers without a key only, under the cache key of
the tile drawn without any private layer. While the access switches are not followed live, nothing
is served here.
"""

import asyncio
import re
from typing import NamedTuple
from urllib.parse import parse_qsl

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from tiles.cache import CachedTile, cache_key
from tiles.provider import TileProvider
from tiles.request import tile_request
from tiles.responses import matches, tile_response
from twin import cors
from twin.access import LayerAccess
from twin.errors import ApiError, deadline, error_response, nul_in
from twin.limits import TimelyHeaders
from twin.settings import Settings

TILE_PATH = re.compile(r"^/(?:collections/(?P<layer>[^/]+)/tiles|tiles/onemap)/(?P<tms>[^/]+)/"
                       r"(?P<z>[0-9]+)/(?P<y>[0-9]+)/(?P<x>[0-9]+)$")
ENCODED_HEADS = 100_000  # tiles whose encoded response heads are kept (then all are dropped at once)
PUBLIC_TILES = "public_tiles"  # the app's PublicTiles in the lifespan state, which uvicorn hands to its protocols
PUBLIC = "twin.public_tile"  # in the scope of a request TileProtocol looked at: its PublicTile, or None


class PublicTile(NamedTuple):  # made on every hit, where a frozen dataclass took a microsecond more
    """A GET of a tile anyone may have, as the fast path answers it."""
    url: re.Match  # of TILE_PATH: layer (None for the one-map tile), tms, z, y, x
    key: str  # in the caches
    hidden: frozenset[str]  # the private layers a composite tile leaves out
    cross_origin: dict[str, str]  # CORS headers to send with it


class PublicTiles:
    def __init__(self, access: LayerAccess, origins: list[str], provider: TileProvider, settings: Settings):
        self.access, self.origins, self.provider = access, origins, provider
        self.answer = deadline(self._answer, settings)  # the ASGI app of a request whose scope holds its PublicTile
        self._encoded: dict[tuple[str, str], tuple] = {}  # (etag, cache-control) → each answer's encoded head
        self._defaults: tuple[list | None, bytes] = (None, b"")

    def encoded(self, tile: CachedTile, if_none_match: str | None) -> tuple[int, bytes, bytes]:
        """(status, header lines, body) of a hit, the lines encoded once per tile content and caching policy."""
        both = self._encoded.get((tile.etag, tile.cache_control))
        if both is None:
            if len(self._encoded) >= ENCODED_HEADS:
                self._encoded.clear()
            both = self._encoded[tile.etag, tile.cache_control] = tuple(
                (status, b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()), body)
                for status, headers, body in (tile_response(tile, None, "hit"), tile_response(tile, tile.etag, "hit")))
        return both[matches(if_none_match, tile.etag)]

    def default_lines(self, defaults: list[tuple[bytes, bytes]]) -> bytes:
        """uvicorn's default headers (server, date) encoded, once per list: uvicorn makes a new one each second."""
        if defaults is not self._defaults[0]:
            self._defaults = (defaults, b"".join(b"%s: %s\r\n" % pair for pair in defaults))
        return self._defaults[1]

    def public(self, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> PublicTile | None:
        """The public tile a GET of `path` asks for, or None when the app must answer."""
        match = TILE_PATH.match(path)
        if match is None or not self.access.live or nul_in(path, query):  # the app answers a NUL with a 400
            return None
        cross_origin = cors.simple_headers(self.origins, headers)
        if cross_origin is None:
            return None
        private, layer = self.access.private(), match.group("layer")
        if layer in private:
            return None
        if layer is None and private and any(k == b"authorization" for k, _ in headers):
            return None
        hidden = private if layer is None else frozenset()
        # made on every hit: tuple.__new__ skips the named tuple's Python-level constructor (a third of a microsecond)
        return tuple.__new__(PublicTile, (match, cache_key(path, query, hidden), hidden, cross_origin))

    async def _answer(self, scope, receive, send):
        tile: PublicTile = scope[PUBLIC]
        keep = None
        try:
            status, headers, body, keep = await self.provider.answer(
                tile.key, lambda: tile_request(tile.url.groupdict(), _query(scope["query_string"]), tile.hidden),
                _if_none_match(scope["headers"]))
        except ApiError as e:
            error = error_response(e)
            status, headers, body = error.status_code, dict(error.headers), error.body
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in (headers | tile.cross_origin).items()]})
        await send({"type": "http.response.body", "body": body})
        if keep:
            await keep()


def _query(query_string: bytes) -> dict[str, str]:
    """The query as Starlette's QueryParams reads it (of a repeated parameter the last counts), in a third of
    its time."""
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def _if_none_match(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:  # a loop, not a generator: this runs on every hit
        if name == b"if-none-match":
            return value.decode("latin-1")
    return None


class TileFastPath:
    def __init__(self, app, tiles: PublicTiles):
        self.app, self.tiles = app, tiles

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        if PUBLIC not in scope:
            scope[PUBLIC] = self.tiles.public(scope["path"], scope["query_string"], scope["headers"])
        if scope[PUBLIC] is None:
            return await self.app(scope, receive, send)
        await self.tiles.answer(scope, receive, send)


class TileProtocol(TimelyHeaders):
    """uvicorn's httptools protocol (with twin.limits' header bounds) answering cached public tiles itself,
    and handing their misses to `PublicTiles.answer` rather than to the app."""

    answered = False  # the current request was answered here: its end of message is not the app's
    idle_since: float | None = None  # loop time of the last hit, if no request has begun since
    hit_keep_alive: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        # the ASGI scope is built only for a request the app answers (on_headers_complete)
        self.answered, self.url, self.headers, self.expect_100_continue = False, b"", [], False
        self.in_headers, self.idle_since = True, None

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self._headers_arrived()
        seen = self._look_up()
        if self.answered:
            return
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # the scope (TimelyHeaders' part ran at the real beginning)
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers
        self.scope.update(seen)
        if seen.get(PUBLIC) is None:
            return super().on_headers_complete()
        app, self.app = self.app, self.app_state[PUBLIC_TILES].answer  # a public tile: straight to its answer
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        if not self.answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.answered:
            super().on_message_complete()

    def _look_up(self) -> dict:
        """Answers the request if it is a public tile in the cache; else what was seen, for the scope (nothing
        when the request was not looked at: the middleware does)."""
        tiles = self.app_state.get(PUBLIC_TILES)
        busy = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if tiles is None or busy or self.parser.get_method() != b"GET" or self.parser.should_upgrade():
            return {}
        url = httptools.parse_url(self.url)
        if b"%" in url.path:
            return {}
        public = tiles.public(self.root_path + url.path.decode("ascii"), url.query or b"", self.headers)
        tile = tiles.provider.memory.get(public.key) if public else None
        if tile is None:
            return {PUBLIC: public}
        status, lines, body = tiles.encoded(tile, _if_none_match(self.headers))
        cross_origin = public.cross_origin and b"".join(f"{k}: {v}\r\n".encode("latin-1")
                                                         for k, v in public.cross_origin.items())
        keep_alive = self.parser.should_keep_alive()
        head = b"".join([STATUS_LINE[status], tiles.default_lines(self.server_state.default_headers), lines,
                         cross_origin or b"", b"" if keep_alive else b"connection: close\r\n", b"\r\n"])
        self.transport.writelines([head, body])  # the tile's bytes are not copied into one buffer first
        self.answered = True
        self.server_state.total_requests += 1
        if self.access_log:
            scope = {"client": self.client, "path": url.path.decode("ascii"), "query_string": url.query or b""}
            self.access_logger.info('%s - "GET %s HTTP/%s" %d', get_client_addr(scope),
                                    get_path_with_query_string(scope), self.parser.get_http_version(), status)
        if not keep_alive:
            self.transport.close()
        else:
            self._idle_after_hit()
        return {}

    def _idle_after_hit(self) -> None:
        """The keep-alive timeout after a hit. uvicorn cancels a timer when a request arrives and arms a new one
        after each response; on a hit that churn cost a seventh of the hit, so here one timer per connection is
        left running and, when it fires, looks at when the connection last fell idle."""
        self.idle_since = self.loop.time()
        if self.hit_keep_alive is None:
            self.hit_keep_alive = self.loop.call_later(self.timeout_keep_alive, self._hit_keep_alive_due)

    def _hit_keep_alive_due(self) -> None:
        self.hit_keep_alive = None
        if self.idle_since is None:  # a request came after the hit: the keep-alive is armed after its response
            return
        left = self.idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.hit_keep_alive = self.loop.call_later(left, self._hit_keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc) -> None:
        if self.hit_keep_alive is not None:
            self.hit_keep_alive.cancel()
            self.hit_keep_alive = None
        super().connection_lost(exc)
