"""Database access: where the database is, and the engines that talk to it.

One driver (psycopg 3) for both the async engine of the server and the sync engine of
the CLI, the ETL and the migrations.
"""

from functools import cache
from pathlib import Path

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from twin.cluster import Cluster, ClusterError
from twin.settings import Settings, get_settings


class DatabaseError(RuntimeError):
    """The database cannot be used; the message says why and what to do."""


def database_url(settings: Settings | None = None) -> str:
    """The external URL when configured, else the managed cluster's."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    try:
        return Cluster(settings.data_dir).url()
    except ClusterError as e:
        raise DatabaseError(str(e)) from e


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise DatabaseError(f"Not a PostgreSQL URL: {url.split('@')[-1]!r} (expected postgresql://user:pw@host:port/db)")


def session_settings(settings: Settings) -> dict[str, str]:
    """The settings of every database session of the server."""
    # jit off: PostGIS row estimates make the planner JIT-compile cheap queries for ~0.4 s each.
    # No parallel workers: a request's query competes with the other requests for the same cores, and where a
    # box's rows are overestimated the planner picks a parallel plan whose workers take longer to start than the
    # page takes to read (docs/benchmarks.md, "After a bulk load").
    return {"statement_timeout": str(settings.statement_timeout_ms), "timezone": "UTC", "jit": "off",
            "max_parallel_workers_per_gather": "0"}


def session_options(settings: Settings) -> str:
    """`session_settings` as libpq `options`."""
    return " ".join(f"-c {name}={value}" for name, value in session_settings(settings).items())


def _pool_args(settings: Settings) -> dict:
    """A database that is down fails a request within seconds (a 503, see twin.errors) instead of
    letting it wait: bounded connect and pool waits; stale connections are replaced on checkout."""
    options = session_options(settings)
    return {"pool_pre_ping": True, "pool_timeout": settings.pool_timeout_s,
            "connect_args": {"options": options, "application_name": "twin",
                             "connect_timeout": settings.connect_timeout_s}}


@cache
def sync_engine() -> Engine:
    settings = get_settings()
    return create_engine(_sqlalchemy_url(database_url(settings)), **_pool_args(settings))


def async_engine(settings: Settings, **options) -> AsyncEngine:
    """The server's engine; `options` override its pool's (the tile renderer has a pool of its own)."""
    return create_async_engine(_sqlalchemy_url(database_url(settings)),
                               **({"pool_size": settings.pool_size} | _pool_args(settings) | options))


def check_database(url: str | None = None) -> str:
    """Reach the database and its PostGIS; return the PostGIS version or raise a clear error."""
    url = url or database_url()
    safe = url.split("@")[-1]
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'postgis'").fetchone()
            if row:
                return row[0]
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
    except psycopg.OperationalError as e:
        raise DatabaseError(f"Cannot reach the database at {safe}: {str(e).strip().splitlines()[-1]}. "
                            "Is it running? For the managed one: twin db up") from e
    if not available:
        raise DatabaseError(f"The database at {safe} lacks PostGIS: install PostGIS 3 on that server.")
    return "not installed yet (run: twin db migrate)"


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(revision: str = "head", url: str | None = None) -> None:
    """Upgrade the schema; at its head, register the layers that ship with the project (layers.registry.ship)."""
    from alembic import command

    url = url or database_url()
    check_database(url)
    command.upgrade(_alembic_config(url), revision)
    if revision == "head":
        from layers.registry import SpecError, ship

        engine = create_engine(_sqlalchemy_url(url), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                ship(conn)
        except SpecError as e:
            raise DatabaseError(f"a shipped layer spec cannot be registered ({e.where}): {e.detail}") from e
        finally:
            engine.dispose()


def downgrade(revision: str, url: str | None = None) -> None:
    from alembic import command

    command.downgrade(_alembic_config(url or database_url()), revision)


def current_revision(url: str | None = None) -> str | None:
    with psycopg.connect(url or database_url()) as conn:
        exists = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone() if exists else None
        return row[0] if row else None


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("postgresql://unused")).get_current_head()
