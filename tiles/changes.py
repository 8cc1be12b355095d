"""Following the change log: LISTEN on `twin_change`, read `twin.change` past a cursor, evict tiles.

Every write appends `twin.change` rows and NOTIFYs at commit. The follower keeps a dedicated
connection listening; on each notice (and every few seconds anyway) it reads the rows after
the last change_id seen and evicts the tiles the ST_Envelope of each row's geometry before
and after touches, from this worker's memory and from the shared cache (Redis) if there is one.
Writers are serialised on the change log (migration 0003), so change ids are allocated in commit
order and a cursor never skips a change that commits late. If the connection drops (or Redis
fails an eviction), the caches stop serving and are cleared, and the follower reconnects.
"""

import asyncio
import logging

import psycopg

from tiles.cache import TileCache
from tiles.settings import TileSettings
from tiles.shared import SharedTileCache

log = logging.getLogger("twin.tiles.changes")
CHANNEL = "twin_change"
BATCH = 5000
ROWS = """
SELECT change_id, layer, changed_at,
       ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b), ST_XMin(a), ST_YMin(a), ST_XMax(a), ST_YMax(a)
FROM (SELECT change_id, layer, changed_at, ST_Envelope(geom_before) b, ST_Envelope(geom_after) a
      FROM twin.change WHERE change_id > %(after)s ORDER BY change_id LIMIT %(limit)s) c
"""


class ChangeFollower:
    def __init__(self, url: str, cache: TileCache, shared: SharedTileCache | None, settings: TileSettings):
        self.url, self.cache, self.shared, self.settings = url, cache, shared, settings
        self.cursor = 0  # every change up to this change_id has been seen
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, application_name="twin-tile-listener") as conn:
                    await self._follow(conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a dropped connection or a failed read: stop serving, start over
                log.warning("tile change listener lost its connection (%s); tile cache cleared, reconnecting", e)
            self.cache.live = False
            self.cache.clear()
            self.connected.clear()
            await asyncio.sleep(1)

    async def _follow(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(f"LISTEN {CHANNEL}")
        row = await (await conn.execute("SELECT coalesce(max(change_id), 0) FROM twin.change")).fetchone()
        self.cursor = row[0]
        self.cache.clear()  # whatever was cached before this connection may have missed changes
        if self.shared:
            await self.shared.clear()
        self.cache.live = True
        self.connected.set()
        log.info("tile change listener connected at change %s", self.cursor)
        while True:
            async for _ in conn.notifies(timeout=self.settings.poll_seconds, stop_after=1):
                pass
            await self.catch_up(conn)

    async def catch_up(self, conn: psycopg.AsyncConnection) -> None:
        """Evict for every change after the cursor, in batches."""
        while True:
            rows = await (await conn.execute(ROWS, {"after": self.cursor, "limit": BATCH})).fetchall()
            changes = [(layer, tuple(box), changed_at) for _, layer, changed_at, *boxes in rows
                       for box in (boxes[:4], boxes[4:]) if box[0] is not None]
            for change in changes:
                self.cache.evict_area(*change)
            if self.shared:
                await self.shared.evict(changes)
            if rows:
                self.cursor = rows[-1][0]
            if len(rows) < BATCH:
                return
