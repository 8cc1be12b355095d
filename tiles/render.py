"""Rendering a tile in PostGIS: the shape's plan, run straight on a psycopg connection of the tile pool.

The tile pool (as big as the server's) keeps its connections in autocommit and does not ping them
on checkout, so a tile is one round trip: no BEGIN, no ping, no ROLLBACK. It is a few lines of its
own rather than an SQLAlchemy engine, whose checkout cost about 58 µs: a tenth of what the server
added above a small tile's SQL.
Each connection keeps most plans prepared (psycopg `prepare`; the plan's $n text runs on a raw cursor);
the MVT comes back binary (bytea, not hex text). The pool connects on demand, so while the database is down a tile fails
at once (503, twin.errors); a pooled connection found broken (the database restarted) is dropped
and the tile tried once more on a fresh one.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import psycopg
from psycopg.pq import TransactionStatus

from tiles.plans import PlanCache, TilePlan, compile_plan, plan_shape
from tiles.request import TileRequest
from tiles.settings import TileSettings
from twin.settings import Settings


class Connections:
    """At most `size` connections, opened on demand by `connect` (in autocommit), reused while idle and sound."""

    def __init__(self, connect: Callable[[], Awaitable[psycopg.AsyncConnection]], size: int, timeout_s: float):
        self._connect, self._timeout_s = connect, timeout_s
        self._free = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection] = []
        self._era = 0  # a connection out when drop() ran is closed when it comes back

    @contextlib.asynccontextmanager
    async def connection(self):
        if self._free.locked():
            try:
                await asyncio.wait_for(self._free.acquire(), self._timeout_s)
            except TimeoutError:  # a 503 (twin.errors), as the server's own pool answers when exhausted
                raise psycopg.OperationalError(f"no tile connection came free within {self._timeout_s:g} s") from None
        else:
            await self._free.acquire()
        era = self._era
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
        except BaseException:
            self._free.release()
            raise
        try:
            yield conn
        finally:
            self._free.release()
            if era == self._era and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE:
                self._idle.append(conn)
            else:  # broken, cancelled in the middle of a query, or from before drop()
                await conn.close()

    async def drop(self) -> None:
        """Close the idle connections, and the others as they come back."""
        self._era += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


class TileRenderer:
    def __init__(self, tiles: TileSettings):
        self.settings = tiles
        self.plans = PlanCache(tiles.plans)
        self.connections: Connections | None = None  # from open() to close(): the app's life

    def open(self, settings: Settings, connect: Callable[[], Awaitable[psycopg.AsyncConnection]]) -> None:
        """`connect`: opens an autocommit connection to the database the tiles are read from (tiles.changes)."""
        self.connections = Connections(connect, settings.pool_size, settings.pool_timeout_s)

    async def close(self) -> None:
        await self.connections.drop()

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
            async with self.connections.connection() as conn:
                try:
                    cursor = await psycopg.AsyncRawCursor(conn).execute(plan.sql, params, prepare=plan.prepare,
                                                                        binary=True)
                    (data,) = await cursor.fetchone()
                    return bytes(data or b"")
                except psycopg.OperationalError:
                    if not conn.broken or last:
                        raise
