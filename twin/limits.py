"""Bounds on what a client may send, enforced before anything parses it.

- `BodyLimit` (ASGI middleware): a request body larger than its path's limit is refused with a
  413 — at once when Content-Length says so, else as soon as the streamed (chunked) body passes
  the limit — and a body that arrives too slowly (slower than MIN_BODY_RATE on average after
  BODY_GRACE_S, or silent for BODY_IDLE_S) is cut off with a 408. The refusal replaces whatever
  answer the application was making of the broken body, and closes the connection.

Bounds on the request line and headers are not here: the ASGI application is called only once they
have all arrived, and uvicorn bounds neither their time nor their size. The reverse proxy in front
does (docs/deployment.md, "Slow and oversized requests: what the proxy must bound").
"""

import asyncio
import time

from fastapi.responses import JSONResponse

from twin.errors import ApiError, error_body

MB = 1 << 20
# A feature's 100,000 vertices (layers.feature_input.MAX_VERTICES) take about 4 MB of JSON; parsing twice that
# already holds the event loop for a fraction of a second.
JSON_BODY_BYTES = 8 * MB
QUERY_BODY_BYTES = 2 * MB  # spatial queries take at most 10,000 vertices (layers.query_geometry)
BODY_GRACE_S = 10.0
BODY_IDLE_S = 30.0
MIN_BODY_RATE = 1024  # bytes per second, on average over the body so far


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
