"""Read replicas: where reads go when PostgreSQL streaming replicas are configured (TWIN_DATABASE_READ_URLS).

Writes, key look-ups, the change feed, the ETL and history stay on the primary (`app.state.engine`).
Reads that may trail a write by the replication lag (items, collections, tiles, queries, exports,
diffs, series) use `app.state.read_engine`, whose connections go round-robin over the replicas; a
replica that does not answer is skipped, and with none answering the primary serves. A connection is
placed when the pool opens it, so the load is spread per pooled connection, not per query.

Tiles read from one source per worker (`tile_sources`), the one its change follower follows, so the
tile cache is evicted on that source's own replay of a change (tiles.changes).
"""

import itertools
import logging
import os

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from twin.db import async_engine, database_url, session_options
from twin.settings import Settings

log = logging.getLogger("twin.replicas")


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def where(url: str) -> str:
    """host:port/db of a URL, without its credentials, for logs."""
    return url.split("@")[-1]


async def open_first(urls: list[str], settings: Settings, application_name: str,
                     **options) -> tuple[str, psycopg.AsyncConnection]:
    """The first of `urls` that answers and a connection to it, with the server's session options."""
    async def connect(url: str) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(url, options=session_options(settings),
                                                     application_name=application_name,
                                                     connect_timeout=settings.connect_timeout_s, **options)

    for url, then in zip(urls, urls[1:]):
        try:
            return url, await connect(url)
        except psycopg.OperationalError as e:
            log.warning("database %s does not answer (%s); trying %s",
                        where(url), str(e).strip().splitlines()[-1], where(then))
    return urls[-1], await connect(urls[-1])


class ReadSources:
    """The primary and the replicas, as plain libpq URLs."""

    def __init__(self, settings: Settings):
        self.primary = _plain(database_url(settings))
        self.replicas = [_plain(url) for url in settings.database_read_urls]
        self._turn = itertools.count()

    def in_turn(self) -> list[str]:
        """The replicas, starting one further each call, then the primary."""
        k = next(self._turn) % len(self.replicas)
        return self.replicas[k:] + self.replicas[:k] + [self.primary]

    def tile_sources(self) -> list[str]:
        """This worker's tile source, then the primary. Workers pick replicas by process id, so the
        tile load is spread over the replicas while each worker's cache follows one replay stream."""
        if not self.replicas:
            return [self.primary]
        return [self.replicas[os.getpid() % len(self.replicas)], self.primary]


def read_engine(settings: Settings, primary: AsyncEngine) -> AsyncEngine:
    """The engine for reads: over the replicas when there are any, else the primary's engine itself."""
    sources = ReadSources(settings)
    if not sources.replicas:
        return primary

    async def connect() -> psycopg.AsyncConnection:
        return (await open_first(sources.in_turn(), settings, "twin-read"))[1]

    return async_engine(settings, async_creator=connect)
