"""Rendering a tile in PostGIS: the shape's plan, run on the tile pool's own psycopg connections.

The pool's connections are in autocommit (one round trip a tile: no BEGIN, no ROLLBACK on
return, no ping on checkout) and keep each plan prepared (psycopg `prepare=True`), and the MVT
comes back in binary (bytea, not hex text). A broken connection fails its request with a 503
(twin.errors) and is replaced by the pool.
"""

from psycopg_pool import AsyncConnectionPool

from tiles.plans import PlanCache, TilePlan, compile_plan
from tiles.request import TileRequest
from tiles.settings import TileSettings
from twin.db import session_options
from twin.settings import Settings


def connection_kwargs(settings: Settings) -> dict:
    return {"autocommit": True, "options": session_options(settings), "application_name": "twin-tiles",
            "connect_timeout": settings.connect_timeout_s}


class TileRenderer:
    def __init__(self, url: str, settings: Settings, tiles: TileSettings):
        self.settings = tiles
        self.plans = PlanCache(tiles.plans)
        self.pool = AsyncConnectionPool(url, kwargs=connection_kwargs(settings), min_size=1, max_size=tiles.pool_size,
                                        timeout=settings.pool_timeout_s, open=False, name="twin-tiles")

    def plan(self, request: TileRequest) -> TilePlan:
        return self.plans.get(request.shape(self.settings),
                              lambda: compile_plan(request.layer_requests(), request.tile, self.settings))

    async def render(self, request: TileRequest) -> bytes:
        """The tile's MVT bytes (empty when nothing is there)."""
        if not request.layers:
            return b""
        plan = self.plan(request)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(plan.sql, plan.params(request.tile, self.settings), prepare=True, binary=True)
            (data,) = await cursor.fetchone()
        return bytes(data or b"")
