"""Rendering a tile in PostGIS: the shape's plan, run straight on a psycopg connection of the tile pool.

The tile pool (an engine of its own, as big as the server's) keeps its connections in autocommit
and does not ping them on checkout, so a tile is one round trip: no BEGIN, no ping, no ROLLBACK.
Each connection keeps most plans prepared (psycopg `prepare`; the plan's $n text runs on a raw cursor);
the MVT comes back binary (bytea, not hex text). The pool connects on demand, so while the database is down a tile fails
at once (503, twin.errors); a pooled connection found broken (the database restarted) is dropped
and the tile tried once more on a fresh one.
"""

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from tiles.plans import PlanCache, TilePlan, compile_plan, plan_shape
from tiles.request import TileRequest
from tiles.settings import TileSettings
from twin.db import async_engine
from twin.settings import Settings


class TileRenderer:
    def __init__(self, tiles: TileSettings):
        self.settings = tiles
        self.plans = PlanCache(tiles.plans)
        self.engine: AsyncEngine | None = None  # from open() to close(): the app's life

    def open(self, settings: Settings, **options) -> None:
        """`options`: the engine's, e.g. `async_creator` to read from a replica (tiles.changes)."""
        self.engine = async_engine(settings, max_overflow=0, pool_pre_ping=False, pool_reset_on_return=None,
                                   isolation_level="AUTOCOMMIT", **options)

    async def close(self) -> None:
        await self.engine.dispose()

    def plan(self, request: TileRequest) -> TilePlan:
        return self.plans.get(plan_shape(request, self.settings),
                              lambda: compile_plan(request.layer_requests(), request.tile, self.settings))

    async def render(self, request: TileRequest) -> bytes:
        """The tile's MVT bytes (empty when nothing is there)."""
        if not request.layers:
            return b""
        plan = self.plan(request)
        params = plan.params(request.tile, self.settings)
        for last in (False, True):
            async with self.engine.connect() as conn:
                driver: psycopg.AsyncConnection = (await conn.get_raw_connection()).driver_connection
                try:
                    cursor = await psycopg.AsyncRawCursor(driver).execute(plan.sql, params, prepare=plan.prepare,
                                                                          binary=True)
                    (data,) = await cursor.fetchone()
                    return bytes(data or b"")
                except psycopg.OperationalError:
                    if driver.broken:
                        await conn.invalidate()
                    if not driver.broken or last:
                        raise
