"""ETL run records (`twin.etl_run`): opening, stages, outcome, and runs whose process died.

A run owns one database session from start to end and holds a session-level advisory
lock keyed by its id in it. The lock disappears with the session, however the process
ends (SIGKILL, crash, lost host), so a 'running' record whose lock nobody holds is a run
that was interrupted: every new run first marks those 'failed' with error 'interrupted'.
Unlike a stored backend pid, a lock cannot be mistaken for a reused pid or a pooled session.
"""

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from twin.metrics import etl_runs

log = logging.getLogger("twin.etl")
LOCK_SPACE = 0x7477  # advisory-lock class for ETL runs ("tw"); the second key is the run id


@dataclass
class Run:
    """An open run: its id and the session that holds its lock. Use as a context manager."""
    id: int
    conn: Connection

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if error is not None and self.status() == "running":
                fail(self, f"internal error: {type(error).__name__}: {error}")
        finally:
            close(self)

    def status(self) -> str:
        with self.conn.begin():
            return self.conn.execute(text("SELECT status FROM twin.etl_run WHERE id = :id"),
                                     {"id": self.id}).scalar_one()


def sweep_interrupted(conn: Connection) -> list[int]:
    """Mark runs whose session is gone as failed ('interrupted'); returns their ids."""
    ids = conn.execute(text(
        "UPDATE twin.etl_run SET status = 'failed', finished_at = clock_timestamp(), error = 'interrupted' "
        "WHERE status = 'running' AND pg_try_advisory_xact_lock(:space, id::integer) RETURNING id"),
        {"space": LOCK_SPACE}).scalars().all()
    if ids:
        log.warning("ETL runs %s were interrupted (their process ended mid-run); marked failed", ids)
    return list(ids)


def open_run(engine: Engine, job: str, layer: str, mode: str, file_name: str | None, sha: str | None,
             department: str | None, actor: str, crs: str | None = None, source_layer: str | None = None) -> Run:
    """Record a new run (after sweeping interrupted ones) and take its lock."""
    conn = engine.connect()
    try:
        with conn.begin():
            sweep_interrupted(conn)
        with conn.begin():  # the row becomes visible only with its lock already held
            run_id = conn.execute(text(
                "INSERT INTO twin.etl_run (job, layer, mode, file_name, file_sha256, department, actor, crs, "
                "source_layer, stage) VALUES (:job, :layer, :mode, :file, :sha, :department, :actor, :crs, "
                ":source_layer, 'starting') RETURNING id"),
                {"job": job, "layer": layer, "mode": mode, "file": file_name, "sha": sha, "department": department,
                 "actor": actor, "crs": crs, "source_layer": source_layer}).scalar_one()
            conn.execute(text("SELECT pg_advisory_lock(:space, :id)"), {"space": LOCK_SPACE, "id": run_id})
    except BaseException:
        conn.close()
        raise
    return Run(run_id, conn)


def set_stage(run: Run, stage: str) -> None:
    with run.conn.begin():
        run.conn.execute(text("UPDATE twin.etl_run SET stage = :stage WHERE id = :id"), {"id": run.id, "stage": stage})


def set_file(run: Run, file_name: str, sha: str) -> None:
    with run.conn.begin():
        run.conn.execute(text("UPDATE twin.etl_run SET file_name = :name, file_sha256 = :sha WHERE id = :id"),
                         {"id": run.id, "name": file_name, "sha": sha})


def succeed(conn: Connection, run_id: int, totals: dict, ignored: list[str]) -> None:
    """Record the outcome, inside the transaction that wrote the data."""
    conn.execute(text(
        "UPDATE twin.etl_run SET status = 'succeeded', stage = NULL, finished_at = clock_timestamp(), read = :read, "
        "inserted = :inserted, updated = :updated, unchanged = :unchanged, deleted = :deleted, "
        "repaired = :repaired, quarantined = :quarantined, ignored_columns = :ignored WHERE id = :id"),
        {k: totals.get(k, 0) for k in ("read", "inserted", "updated", "unchanged", "deleted", "repaired",
                                       "quarantined")} | {"id": run_id, "ignored": ignored})


def fail(run: Run, error: str) -> None:
    if run.conn.in_transaction():
        run.conn.rollback()
    with run.conn.begin():
        run.conn.execute(text("UPDATE twin.etl_run SET status = 'failed', stage = NULL, "
                              "finished_at = clock_timestamp(), error = :e WHERE id = :id"),
                         {"id": run.id, "e": error})
    log.warning("ETL run %s failed: %s", run.id, error)


def close(run: Run) -> None:
    """Release the run's lock and its session (a broken session is simply discarded), and count the run by
    the status it ended with (twin.metrics)."""
    status = "interrupted"  # unknown here: the next run's sweep will record it so
    try:
        if run.conn.in_transaction():
            run.conn.rollback()
        with run.conn.begin():
            status = run.conn.execute(text("SELECT status FROM twin.etl_run WHERE id = :id"),
                                      {"id": run.id}).scalar_one()
            run.conn.execute(text("SELECT pg_advisory_unlock(:space, :id)"), {"space": LOCK_SPACE, "id": run.id})
    except Exception:  # the database went away: the lock went with the session
        run.conn.invalidate()
    finally:
        run.conn.close()
        etl_runs.labels(status).inc()
