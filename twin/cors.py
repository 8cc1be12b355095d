"""Cross-origin calls: web map clients and dashboards on other hosts load the tiles, styles and features
(`TWIN_CORS_ORIGINS`, every origin by default; keys travel in the Authorization header, not cookies)."""

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

EXPOSED = ("ETag", "Location", "Retry-After", "X-Tile-Cache")


def install(app: FastAPI) -> None:
    app.add_middleware(CORSMiddleware, allow_origins=app.state.settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"], expose_headers=EXPOSED)


def simple_headers(origins: list[str], request_headers: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """What CORSMiddleware adds to the answer of a plain GET, for the tile fast path; None when only the
    middleware can tell (a list of allowed origins to check the request's against)."""
    for name, _ in request_headers:  # a loop, not any(): this runs on every tile hit
        if name == b"origin":
            break
    else:
        return {}
    if "*" not in origins:
        return None
    return {"access-control-allow-origin": "*", "access-control-expose-headers": ", ".join(EXPOSED)}
