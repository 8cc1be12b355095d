"""Bounds on what a client may send, enforced before anything parses it.

- `BodyLimit` (ASGI middleware): a request body larger than its path's limit is refused with a
  413 — at once when Content-Length says so, else as soon as the streamed (chunked) body passes
  the limit — and a body that arrives too slowly (slower than MIN_BODY_RATE on average after
  BODY_GRACE_S, or silent for BODY_IDLE_S) is cut off with a 408. The refusal replaces whatever
  answer the application was making of the broken body, and closes the connection.
- `TimelyHeaders` (uvicorn's httptools protocol; `twin serve` runs its subclass `tiles.fastpath.TileProtocol`):
  a request's line and headers must arrive within HEADER_TIMEOUT_S of the connection opening or the
  request beginning, and hold at most MAX_HEADER_BYTES; else a 408 or 431 and the connection closes.
  uvicorn itself bounds neither (its keep-alive timer stops at the first byte), so without this a
  client sending a header byte a second holds its connection for ever.
"""

import asyncio
import time

import orjson
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from twin.errors import ApiError, error_body

MB = 1 << 20
# A feature's 100,000 vertices (layers.feature_input.MAX_VERTICES) take about 4 MB of JSON; parsing twice that
# already holds the event loop for a fraction of a second.
JSON_BODY_BYTES = 8 * MB
QUERY_BODY_BYTES = 2 * MB  # spatial queries take at most 10,000 vertices (layers.query_geometry)
BODY_GRACE_S = 10.0
BODY_IDLE_S = 30.0
MIN_BODY_RATE = 1024  # bytes per second, on average over the body so far
HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024


class BodyRefused(Exception):
    def __init__(self, error: ApiError):
        super().__init__(error.detail)
        self.error = error


def _refusal(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status, headers={"Connection": "close"})


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"The request body is larger than {limit / MB:g} MB, the most this "
                    "endpoint accepts.", where="body")


class BodyLimit:
    def __init__(self, app, default: int, by_prefix: dict[str, int]):
        self.app, self.default = app, default
        self.by_prefix = sorted(by_prefix.items(), key=lambda item: -len(item[0]))

    def limit(self, path: str) -> int:
        return next((size for prefix, size in self.by_prefix if path.startswith(prefix)), self.default)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            return await _refusal(too_large(limit))(scope, receive, send)
        started, received, more, refused, answered = time.monotonic(), 0, True, None, False

        async def bounded_receive():
            nonlocal received, more, refused
            if not more:  # the body is complete: what follows is the disconnect, however late
                return await receive()
            allowed = started + BODY_GRACE_S + received / MIN_BODY_RATE - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(min(allowed, BODY_IDLE_S), 0))
            except TimeoutError:
                refused = ApiError(408, "body_too_slow", f"The request body stopped or arrived slower than "
                                   f"{MIN_BODY_RATE} bytes a second; send it again faster.", where="body")
                raise BodyRefused(refused) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = message.get("more_body", False)
                if received > limit:
                    refused = too_large(limit)
                    raise BodyRefused(refused)
            return message

        async def checked_send(message):
            nonlocal answered
            if refused is None:
                answered = True
                return await send(message)
            if not answered:  # the application answered the broken body (FastAPI: "error parsing the body")
                answered = True
                await _refusal(refused)(scope, receive, send)

        try:
            await self.app(scope, bounded_receive, checked_send)
        except BodyRefused as e:
            if answered:
                raise
            await _refusal(e.error)(scope, receive, send)


def install(app, upload_bytes: int) -> None:
    # uploads: etl.routes answers a declared size over the limit itself (upload_too_large); this backs it up
    app.add_middleware(BodyLimit, default=JSON_BODY_BYTES, by_prefix={
        "/etl/": upload_bytes + MB, "/query/": QUERY_BODY_BYTES, "/raster/": QUERY_BODY_BYTES})


def _raw_response(error: ApiError) -> bytes:
    body = orjson.dumps(error_body(error))
    reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[error.status]
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (error.status, reason, len(body)) + body)


class TimelyHeaders(HttpToolsProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_deadline: asyncio.TimerHandle | None = None
        self.header_bytes = 0
        self.in_headers = True  # reading a request's line and headers (or waiting for the first one)

    def _await_headers(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

    def _headers_arrived(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None
        self.header_bytes = 0

    def _refuse(self, error: ApiError) -> None:
        if not self.transport.is_closing():
            self.transport.write(_raw_response(error))
            self.transport.close()

    def _headers_too_slow(self) -> None:
        self.header_deadline = None
        self._refuse(ApiError(408, "headers_too_slow", f"The request line and headers did not arrive within "
                              f"{HEADER_TIMEOUT_S:g} s."))

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers = True

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self._headers_arrived()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_headers:  # armed only when the headers did not all come in this piece (most do)
            self._await_headers()
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._headers_arrived()
                self._refuse(ApiError(431, "headers_too_large", f"The request line and headers are larger than "
                                      f"{MAX_HEADER_BYTES // 1024} KB."))
