"""Seeing, from the database itself, that a writer is queued on the writers' lock (migration 0005): a test that
holds the lock waits for this instead of sleeping and then asserting that nothing has happened yet, which
would also pass if the writer never started."""

import psycopg

from tests.tile_support import wait_for

WAITING = """
SELECT a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND l.locktype = 'relation' AND l.relation = 'twin.writer_lock'::regclass
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def waiting_writers(url: str) -> list[str]:
    """The statements of the sessions of database `url` waiting for the writers' lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [query for (query,) in conn.execute(WAITING)]


def wait_for_waiting_writer(url: str, seconds: float = 30.0) -> list[str]:
    """The statements waiting for the writers' lock, once there is one; fails after `seconds` without any."""
    waiting = wait_for(lambda: waiting_writers(url), seconds)
    assert waiting, f"no writer queued on the writers' lock within {seconds:.0f} s"
    return waiting
