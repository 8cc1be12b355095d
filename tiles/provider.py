"""Where a tile comes from: this worker's memory, then the shared cache (Redis, when configured), else PostGIS.

The caches serve only while the change listener is connected (`memory.live`): without it a change
could go unseen. A rendered tile is stored in both, unless its layers changed while it rendered; a
tile found in the shared cache is served but not kept in memory (why: tiles.shared).
"""

from collections.abc import Awaitable, Callable

from tiles.cache import CachedTile, TileCache, etag_of
from tiles.params import is_past
from tiles.render import TileRenderer
from tiles.responses import tile_response
from tiles.request import TileRequest
from tiles.settings import TileSettings
from tiles.shared import SharedTileCache


class TileProvider:
    def __init__(self, memory: TileCache, renderer: TileRenderer, shared: SharedTileCache | None,
                 settings: TileSettings):
        self.memory, self.renderer, self.shared, self.settings = memory, renderer, shared, settings

    async def answer(self, key: str, ask: Callable[[], TileRequest], if_none_match: str | None
                     ) -> tuple[int, dict[str, str], bytes, Callable[[], Awaitable[None]] | None]:
        """The HTTP answer (status, headers, body) for the tile under `key` (see `tile`), and for a tile just
        rendered what keeps it in the caches: to run once the answer is out, which it need not wait for."""
        tile, state, keep = await self.tile(key, ask)
        return *tile_response(tile, if_none_match, state), keep

    async def tile(self, key: str, ask: Callable[[], TileRequest]
                   ) -> tuple[CachedTile, str, Callable[[], Awaitable[None]] | None]:
        """The tile under `key`, whether it was cached ("hit") or rendered ("miss"), and for a rendered one
        what keeps it. `ask` validates the request (raising ApiError) and is only called when the tile is
        not in memory."""
        cached = self.memory.get(key)
        if cached is not None:
            return cached, "hit", None
        request = ask()
        mark = self.memory.generation(request.names)
        tile = request.tile
        shared = self.shared if self.memory.live else None
        found = shared and await shared.get(key)
        if found:  # served, not kept in memory (see tiles.shared)
            data, etag, control = found
            return CachedTile(data, etag, control, request.names, tile.tms, tile.z, tile.x, tile.y,
                              request.moment), "hit", None
        data = await self.renderer.render(request)
        control = self.settings.past_cache_control if is_past(request.moment) else self.settings.live_cache_control
        rendered = CachedTile(data, etag_of(data), control, request.names, tile.tms, tile.z, tile.x, tile.y,
                              request.moment)

        async def keep() -> None:  # unless the layers changed since `mark`, however long the answer took
            self.memory.put(key, rendered, mark)
            if shared:
                await shared.put(key, rendered,
                                 lambda: self.memory.live and self.memory.generation(request.names) == mark)
        return rendered, "miss", keep
