"""Rendering a tile in PostGIS: the shape's plan, run straight on an asyncpg connection of the tile pool.

The renderer talks to PostgreSQL through asyncpg, the rest of the server through psycopg: asyncpg runs a
tile as fast as a synchronous psycopg client does (`bench/tiles.py` compares with that floor), psycopg's
asyncio client measurably slower (docs/benchmarks.md, Tiles). The tile pool (as big as
the server's) keeps its connections without pinging them on checkout, so a tile is one round trip.
Each connection keeps the plans prepared (asyncpg's statement cache), but for the shapes a generic
plan would slow (`TilePlan.prepare`), prepared afresh each time. The pool connects on demand, so while
the database is down a tile fails at once (503, twin.errors); a pooled connection found broken (the
database restarted) is dropped and the tile tried once more on a fresh one.
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


class Connections:
    """At most `settings.pool_size` connections to the URL `source()` names, opened on demand, reused while sound."""

    def __init__(self, source: Callable[[], str], settings: Settings):
        self._source, self._settings = source, settings
        self._free = asyncio.Semaphore(settings.pool_size)
        self._idle: list[asyncpg.Connection] = []
        self._era = 0  # a connection out when drop() ran is closed when it comes back

    async def _connect(self) -> asyncpg.Connection:
        settings = self._settings
        return await asyncpg.connect(
            self._source(), timeout=settings.connect_timeout_s, max_cacheable_statement_size=1 << 20,
            server_settings=session_settings(settings) | {"application_name": "twin-tile-renderer"})

    async def acquire(self) -> tuple[asyncpg.Connection, int]:
        """A connection, and the era it went out in, for `release` (plain calls, not a context manager: this
        runs on every miss)."""
        if self._free.locked():
            try:
                await asyncio.wait_for(self._free.acquire(), self._settings.pool_timeout_s)
            except TimeoutError:
                raise unavailable(TimeoutError("no tile connection came free")) from None
        else:
            await self._free.acquire()
        try:
            return (self._idle.pop() if self._idle else await self._connect()), self._era
        except BaseException:
            self._free.release()
            raise

    def release(self, conn: asyncpg.Connection, era: int, sound: bool) -> None:
        """`sound`: its query ended; a broken, failed or cancelled one, or one from before drop(), is closed."""
        self._free.release()
        if sound and era == self._era and not conn.is_closed():
            self._idle.append(conn)
        else:
            conn.terminate()

    def drop(self) -> None:
        """Close the idle connections, and the others as they come back."""
        self._era += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.terminate()


class TileRenderer:
    def __init__(self, tiles: TileSettings):
        self.settings = tiles
        self.plans = PlanCache(tiles.plans)
        self.connections: Connections | None = None  # from open() to close(): the app's life

    def open(self, settings: Settings, source: Callable[[], str]) -> None:
        """`source`: the URL of the database the tiles are read from now (tiles.changes)."""
        self.connections = Connections(source, settings)

    def close(self) -> None:
        self.connections.drop()

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
        conn, era = await self.connections.acquire()
        sound = False
        try:
            if plan.prepare:
                data = await conn.fetchval(plan.sql, *params)
            else:  # a statement of its own, planned for these values
                data = await (await conn.prepare(plan.sql)).fetchval(*params)
            sound = True
            return data or b""
        except UNAVAILABLE as e:
            if not (retry and (conn.is_closed() or isinstance(e, BROKEN))):
                raise
        finally:
            self.connections.release(conn, era, sound)
        return await self._run(plan, params, retry=False)  # the database dropped a pooled connection: a fresh one
