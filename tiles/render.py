"""Rendering a tile in PostGIS: the shape's plan, run straight on an asyncpg connection of the tile pool.

The renderer talks to PostgreSQL through asyncpg, the rest of the server through psycopg: asyncpg runs a
tile as fast as a synchronous psycopg client does (`bench/tiles.py` compares with that floor), psycopg's
asyncio client measurably slower (docs/benchmarks.md, Tiles). The tile pool is asyncpg's (as big as the
server's); it neither pings a connection on checkout nor resets it on release, so a tile is one round trip
(a tile changes nothing in the session). Each connection keeps the plans prepared (asyncpg's statement
cache), but for the shapes a generic plan would slow (`TilePlan.prepare`), prepared afresh each time. The
pool connects on demand, so while the database is down a tile fails at once (503, twin.errors); a pooled
connection found broken (the database restarted) expires the pool's connections, and the tile is tried
once more on a fresh one.
"""

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from tiles.plans import PlanCache, TilePlan, compile_plan, plan_shape
from tiles.request import TileRequest
from tiles.settings import TileSettings
from twin.db import session_settings
from twin.errors import unavailable
from twin.settings import Settings

log = logging.getLogger("twin.tiles")

# The database cannot answer now: refused or lost connections (08), shutdown or cancelled statements (57,
# statement_timeout among them), no slot left (53), or a connect that timed out.
UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
               asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
               asyncpg.InternalClientError)
# A pooled connection the database shut down while it was idle can still look open, its protocol caught
# in the error the shutdown sent ("another operation is in progress"): it is broken like a closed one.
BROKEN = asyncpg.InternalClientError


async def _keep(conn: asyncpg.Connection) -> None:
    """Nothing to reset: a tile leaves no state in the session (asyncpg's default reset is a round trip)."""


def _discard(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    """Close a connection whose query failed or was cancelled, so it is not pooled again; whether it was
    closed already."""
    try:
        closed = conn.is_closed()
        conn.terminate()
        return closed
    except asyncpg.InterfaceError:  # asyncpg found it closed and gave it back to the pool itself
        return True


class TileRenderer:
    def __init__(self, tiles: TileSettings):
        self.settings = tiles
        self.plans = PlanCache(tiles.plans)
        self.pool: asyncpg.Pool | None = None  # from open() to close(): the app's life
        self.wait_s = 0.0
        self.out = 0  # connections acquired and not yet given back
        self.releasing: set[asyncio.Task] = set()  # releases under way (_release_soon)

    async def open(self, settings: Settings, database_url_now: Callable[[], str]) -> None:
        """`database_url_now`: the URL of the database the tiles are read from now (tiles.changes)."""

        async def connect(*_, **options) -> asyncpg.Connection:
            return await asyncpg.connect(database_url_now(), **options)

        self.wait_s = settings.pool_timeout_s
        self.pool = await asyncpg.create_pool(
            connect=connect, min_size=0, max_size=settings.pool_size, reset=_keep,
            max_queries=1 << 62,  # not replaced after 50,000 tiles, losing its prepared plans
            timeout=settings.connect_timeout_s, max_cacheable_statement_size=1 << 20,
            server_settings=session_settings(settings) | {"application_name": "twin-tile-renderer"})

    async def switched(self) -> None:
        """Tiles are read from another database now: every connection to the old one is closed, the idle
        ones at their next checkout, the others as they come back."""
        await self.pool.expire_connections()

    def close(self) -> None:
        self.pool.terminate()

    def plan(self, request: TileRequest) -> TilePlan:
        return self.plans.get(plan_shape(request, self.settings),
                              lambda: compile_plan(request.layer_requests(), request.tile, self.settings))

    async def render(self, request: TileRequest) -> bytes:
        """The tile's MVT bytes (empty when nothing is there)."""
        if not request.layers:
            return b""
        plan = self.plan(request)
        try:
            return await self._run(plan, plan.params(request.tile, self.settings))
        except UNAVAILABLE as e:
            error, reason = unavailable(e), str(e).strip().splitlines()
            log.warning("503 %s for a tile (%s: %s)", error.code, type(e).__name__, reason[0] if reason else "")
            raise error from e

    async def _run(self, plan: TilePlan, params: list, retry: bool = True) -> bytes:
        # a wait is bounded only when every connection is out: asyncpg runs an acquire given a timeout (and its
        # release) in a task of its own, which costs more than the rest of the pool's work for a miss
        timeout = self.wait_s if self.out >= self.pool.get_max_size() else None
        self.out += 1
        try:
            conn = await self.pool.acquire(timeout=timeout)  # none came free in time: TimeoutError, a 503
        except BaseException:
            self.out -= 1
            raise
        try:
            if plan.prepare:
                data = await conn.fetchval(plan.sql, *params)
            else:  # a statement of its own, planned for these values
                data = await (await conn.prepare(plan.sql)).fetchval(*params)
        except BaseException as e:
            self.out -= 1
            broken = _discard(conn) or isinstance(e, BROKEN)
            if not (retry and broken and isinstance(e, UNAVAILABLE)):
                raise
            await self.pool.expire_connections()  # the database restarted: its other connections are too
            return await self._run(plan, params, retry=False)  # on a fresh connection
        self._release_soon(conn)
        return data or b""

    def _release_soon(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        """Give the connection back while the tile goes out: asyncpg releases in a task of its own, and
        awaiting it would hold the answer for as many turns of the event loop."""
        task = asyncio.get_running_loop().create_task(self._release(conn))
        self.releasing.add(task)
        task.add_done_callback(self.releasing.discard)

    async def _release(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        try:
            await self.pool.release(conn)
        except Exception as e:  # the connection is lost (the pool is closing, or it broke): the pool forgets it
            log.debug("tile connection not given back (%s: %s)", type(e).__name__, e)
        finally:
            self.out -= 1
