"""How a tile goes out over HTTP: 200 with the MVT, 204 when empty, 304 when the client has it.

Both doors (tiles.fastpath for public tiles, tiles.routes for the rest) answer with `tile_response`
(through `TileProvider.answer`) and refuse with `twin.errors.error_response`.
"""

from tiles.cache import CachedTile

MVT = "application/vnd.mapbox-vector-tile"


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def tile_response(tile: CachedTile, if_none_match: str | None, cache_state: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); `cache_state` (hit | miss) goes out as X-Tile-Cache."""
    headers = {"etag": tile.etag, "cache-control": tile.cache_control, "x-tile-cache": cache_state}
    if matches(if_none_match, tile.etag):
        return 304, headers, b""
    if not tile.data:
        return 204, headers, b""
    return 200, headers | {"content-type": MVT, "content-length": str(len(tile.data))}, tile.data


def encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as an ASGI response start message carries them."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
