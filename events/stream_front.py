"""`GET /stream` answered in front of the app's middleware.

An event goes out to every open stream, so whatever wraps a stream's writes runs once per client per event:
behind the middleware each write crossed six wrappers (metrics, CORS, limits, the NUL check, the deadline and
the framework's error layers). `StreamFront` wraps the served app (twin.app) and opens the streams it can
itself, by the route's own function (events.stream), writing through the request deadline only. It leaves to
the app, whose route does the same behind the middleware: a request whose origin only CORSMiddleware can judge
(a list of allowed origins), a URL with a NUL character, an `after` that is not a plain number (the route's
validation says what is wrong), anything but a GET of /stream. Errors are the house's (twin.errors). It is
plain ASGI; the stream's answers are not counted in the HTTP metrics (`twin_stream_clients` counts streams).
"""

from typing import NamedTuple

from fastapi import FastAPI
from starlette.requests import Request

from events.stream import MAX_ID, stream
from twin import cors
from twin.errors import UNAVAILABLE, ApiError, deadline, error_response, nul_in, unavailable

PATH = "/stream"
OPENING = "twin.stream_opening"  # in the scope of a stream opened here: its Opening


class Opening(NamedTuple):
    """A GET of /stream as the front opens it."""
    request: Request
    after: int | None
    cross_origin: dict[str, str]  # CORS headers to send with it


def opening(scope, api: FastAPI, origins: list[str]) -> Opening | None:
    """None when the app must answer."""
    cross_origin = cors.simple_headers(origins, scope["headers"])
    if cross_origin is None or nul_in(scope["path"], scope["query_string"]):
        return None
    request = Request({**scope, "app": api})  # the route's function reads the app's state from it
    after = request.query_params.get("after")
    if after is None:
        return Opening(request, None, cross_origin)
    if not (after.isascii() and after.isdigit() and int(after) <= MAX_ID):
        return None
    return Opening(request, int(after), cross_origin)


class StreamFront:
    def __init__(self, app, api: FastAPI):
        self.app, self.api = app, api
        self.origins = api.state.settings.cors_origins
        self.open = deadline(self._open, api.state.settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "GET":
            found = opening(scope, self.api, self.origins)
            if found is not None:
                scope[OPENING] = found
                return await self.open(scope, receive, send)
        await self.app(scope, receive, send)

    async def _open(self, scope, receive, send) -> None:
        request, after, cross_origin = scope[OPENING]
        params = request.query_params
        try:
            response = await stream(request, params.get("topics"), params.get("layers"), after)
        except ApiError as e:
            response = error_response(e)
        except UNAVAILABLE as e:
            response = error_response(unavailable(e))
        response.headers.update(cross_origin)
        await response(scope, receive, send)
