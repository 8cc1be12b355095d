"""Following the change log: LISTEN on `twin_change`, read `twin.change` past a cursor, evict tiles.

Every write appends `twin.change` rows and NOTIFYs at commit. The follower keeps a dedicated
connection listening; on each notice (and every few seconds anyway) it reads the rows after
the last change_id seen and evicts the tiles that the envelope of each row's geometry before
and after (kept in the row) touches, from this worker's memory and the shared cache (Redis) if any.
Writers are serialised on the change log (migration 0003), so change ids are allocated in commit
order and a cursor never skips a change that commits late. If the connection drops (or Redis
fails an eviction), the caches stop serving and are cleared, and the follower reconnects.

With read replicas (twin.replicas) tiles are rendered from this worker's replica and the follower
follows that replica's own copy of the change log. A standby gets no NOTIFY, so there the follower
polls every STANDBY_POLL_S: a tile is evicted only once the replica it is rendered from has replayed
the change, never at the primary's commit (a render between the two would re-cache the old tile).
When the replica does not answer, the follower (and so the renderer) falls back to the primary and
tries the replica again every RETRY_PREFERRED_S; each switch clears the caches and the renderer's pool.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg

from tiles.cache import TileCache
from tiles.settings import TileSettings
from tiles.shared import SharedTileCache
from twin.replicas import open_first, where
from twin.settings import Settings

log = logging.getLogger("twin.tiles.changes")
CHANNEL = "twin_change"
BATCH = 5000
STANDBY_POLL_S = 0.15
RETRY_PREFERRED_S = 30.0
ROWS = """
SELECT change_id, layer, changed_at,
       ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b), ST_XMin(a), ST_YMin(a), ST_XMax(a), ST_YMax(a)
FROM (SELECT change_id, layer, changed_at, bbox_before b, bbox_after a
      FROM twin.change WHERE change_id > %(after)s ORDER BY change_id LIMIT %(limit)s) c
"""


class ChangeFollower:
    def __init__(self, sources: list[str], cache: TileCache, shared: SharedTileCache | None, settings: TileSettings,
                 server: Settings, on_switch: Callable[[], Awaitable[None]]):
        """`sources`: where tiles are read, preferred first; `on_switch` expires the renderer's connections."""
        self.sources, self.cache, self.shared, self.settings = sources, cache, shared, settings
        self.server, self.on_switch = server, on_switch
        self.url = sources[0]  # the source followed, and so the one tiles are rendered from
        self.cursor = 0  # every change up to this change_id has been seen
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                url, conn = await open_first(self.sources, self.server, "twin-tile-listener", autocommit=True)
                async with conn:
                    await self._follow(url, conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a dropped connection or a failed read: stop serving, start over
                log.warning("tile change listener lost its connection (%s); tile cache cleared, reconnecting", e)
            self.cache.live = False
            self.cache.clear()
            self.connected.clear()
            await asyncio.sleep(1)

    async def _follow(self, url: str, conn: psycopg.AsyncConnection) -> None:
        if url != self.url:
            self.url = url
            await self.on_switch()
        standby = (await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone())[0]
        if not standby:
            await conn.execute(f"LISTEN {CHANNEL}")
        row = await (await conn.execute("SELECT coalesce(max(change_id), 0) FROM twin.change")).fetchone()
        self.cursor = row[0]
        self.cache.clear()  # whatever was cached before this connection may have missed changes
        if self.shared:
            await self.shared.reset()
        self.cache.live = True
        self.connected.set()
        log.info("tile change listener following %s%s at change %s", where(url), " (standby)" if standby else "",
                 self.cursor)
        since = time.monotonic()
        while url == self.sources[0] or time.monotonic() - since < RETRY_PREFERRED_S:
            if standby:
                await asyncio.sleep(STANDBY_POLL_S)
            else:
                async for _ in conn.notifies(timeout=self.settings.poll_seconds, stop_after=1):
                    pass
            await self.catch_up(conn)

    async def catch_up(self, conn: psycopg.AsyncConnection) -> None:
        """Evict for every change after the cursor, in batches."""
        while True:
            rows = await (await conn.execute(ROWS, {"after": self.cursor, "limit": BATCH})).fetchall()
            changes = [(layer, tuple(box), changed_at) for _, layer, changed_at, *boxes in rows
                       for box in (boxes[:4], boxes[4:]) if box[0] is not None]
            for layer in {row[1] for row in rows}:  # a layer without geometry evicts no tile but changes all the same
                self.cache.changed(layer)
            for change in changes:
                self.cache.evict_area(*change)
            if self.shared:
                await self.shared.evict(changes)
            if rows:
                self.cursor = rows[-1][0]
            if len(rows) < BATCH:
                return
