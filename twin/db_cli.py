"""`twin db`: the database, the managed local PostGIS (with its WAL archive) or TWIN_DATABASE_URL."""

import os
from pathlib import Path

import typer

from twin.cluster import Cluster, ClusterError
from twin.console import JSON_OPTION, console, err, fail, listing
from twin.db import DatabaseError, check_database, database_url, migrate, sync_engine
from twin.settings import get_settings

app = typer.Typer(help="The database: the managed local PostGIS, or TWIN_DATABASE_URL.", no_args_is_help=True)


def cluster() -> Cluster:
    """The managed cluster, archiving its WAL unless TWIN_ARCHIVE=false (twin.pitr)."""
    from twin.pitr import Archive

    settings = get_settings()
    return Archive(settings).cluster if settings.archive else Cluster(settings.data_dir)


def archive():
    """The managed cluster's pgBackRest repository, or a clear error where there is none."""
    from twin.pitr import Archive

    settings = get_settings()
    if not managed():
        fail("TWIN_DATABASE_URL is set: point-in-time recovery is that server's own (docs/operations.md); "
             "twin db backup FILE still writes a dump of it")
    if not settings.archive:
        fail("TWIN_ARCHIVE is false: the managed cluster does not archive its WAL")
    return Archive(settings)


def managed() -> bool:
    return not get_settings().database_url


@app.command("up")
def db_up():
    """Start the managed PostGIS (initialising it the first time) and apply the migrations."""
    if not managed():
        console.print("TWIN_DATABASE_URL is set: using that database, no local cluster started.")
    else:
        try:
            status = archive().up() if get_settings().archive else cluster().up()
        except ClusterError as e:
            fail(str(e))
        console.print(f"PostGIS running on 127.0.0.1:{status.port} (data in {status.pgdata})")
    db_migrate("head")
    if managed() and get_settings().archive:
        from twin.pitr import ArchiveError

        repository = archive()
        try:
            first = repository.ensure()
        except ArchiveError as e:
            fail(str(e))
        console.print(f"WAL archived to {repository.repository}"
                      + (f"; first base backup {first.label} taken" if first else ""))


@app.command("down")
def db_down():
    """Stop the managed PostGIS."""
    try:
        cluster().down()
    except ClusterError as e:
        fail(str(e))
    console.print("stopped")


@app.command("status")
def db_status():
    """Is the database up, where, and at which migration."""
    if managed():
        status = cluster().status()
        console.print(f"managed cluster: {'running' if status.running else 'stopped'}"
                      f"{'' if status.initialized else ' (not initialised)'}, port {status.port}, data {status.pgdata}")
        if not status.running:
            raise typer.Exit(3)
    try:
        console.print(f"PostGIS {check_database()}")
    except DatabaseError as e:
        fail(str(e))


@app.command("url")
def db_url():
    """Print the database URL (with its password: treat it as a secret)."""
    try:
        print(database_url())
    except DatabaseError as e:
        fail(str(e))


@app.command("psql")
def db_psql(args: list[str] = typer.Argument(None, help="extra psql arguments")):
    """Open psql on the database."""
    try:
        url = database_url()
    except DatabaseError as e:
        fail(str(e))
    os.execvp("psql", ["psql", url, *(args or [])])


@app.command("migrate")
def db_migrate(revision: str = typer.Option("head", help="target revision")):
    """Apply the Alembic migrations."""
    try:
        migrate(revision)
    except DatabaseError as e:
        fail(str(e))
    console.print(f"database migrated to {revision}")


@app.command("analyst-role")
def db_analyst_role(name: str = typer.Option("twin_analyst", help="the role's name"),
                    statement_timeout: int = typer.Option(None, help="seconds a statement may run (0: no limit; "
                                                                     "default TWIN_ANALYST_STATEMENT_TIMEOUT_S)"),
                    idle_in_transaction_timeout: int = typer.Option(
                        None, help="seconds a transaction may sit idle before its connection is closed "
                                   "(default TWIN_ANALYST_IDLE_IN_TRANSACTION_TIMEOUT_S)"),
                    idle_timeout: int = typer.Option(None, help="seconds an idle connection is kept "
                                                                "(default TWIN_ANALYST_IDLE_SESSION_TIMEOUT_S)"),
                    connection_limit: int = typer.Option(None, help="connections at once (-1: no limit; default "
                                                                    "TWIN_ANALYST_CONNECTION_LIMIT)")):
    """Create or refresh a read-only role for analysts (layers, history, change log; never the API keys)
    with a new password and bounded sessions, and print its connection URL (a secret)."""
    from dataclasses import replace

    from twin.analyst import AnalystRoleError, SessionBounds, analyst_url, grant_analyst_role

    given = {"statement_timeout_s": statement_timeout, "idle_in_transaction_timeout_s": idle_in_transaction_timeout,
             "idle_session_timeout_s": idle_timeout, "connection_limit": connection_limit}
    bounds = replace(SessionBounds.from_settings(get_settings()),
                     **{field: value for field, value in given.items() if value is not None})
    try:
        with sync_engine().begin() as conn:
            password = grant_analyst_role(conn, name, bounds)
        url = analyst_url(database_url(), name, password)
    except (AnalystRoleError, DatabaseError) as e:
        fail(str(e))
    err.print(f"read-only role {name} ready; its URL (shown once, keep it safe):")
    print(url)


@app.command("backup")
def db_backup(file: Path = typer.Argument(None, help="the backup file to write (pg_dump custom format); "
                                                   "without it, a base backup into the pgBackRest repository")):
    """Back up the whole database (layers, history, change log, runs, keys) to FILE; or, without FILE, take a
    base backup of the managed cluster into its repository (full when the last full one is older than
    TWIN_BACKUP_FULL_EVERY_DAYS, else incremental): run it daily (docs/operations.md)."""
    from twin.backup import BackupError, backup

    if file is None:
        from twin.pitr import ArchiveError

        try:
            taken = archive().backup()
        except ArchiveError as e:
            fail(str(e))
        console.print(f"base backup {taken.label} ({taken.type}, database {taken.database_bytes / 2**20:.1f} MB, "
                      f"{taken.repository_bytes / 2**20:.1f} MB added to the repository)")
        return
    try:
        size = backup(database_url(), file)
    except (BackupError, DatabaseError) as e:
        fail(str(e))
    console.print(f"backed up to {file} ({size / 2**20:.1f} MB)")


@app.command("backups")
def db_backups(as_json: bool = JSON_OPTION):
    """List the base backups in the pgBackRest repository and the window a restore can reach."""
    from twin.pitr import ArchiveError

    try:
        window = archive().window()
    except ArchiveError as e:
        fail(str(e))
    listing([{"label": b.label, "type": b.type, "started": f"{b.started:%Y-%m-%d %H:%M:%S}Z",
              "stopped": f"{b.stopped:%Y-%m-%d %H:%M:%S}Z", "database_mb": round(b.database_bytes / 2**20, 1),
              "added_mb": round(b.repository_bytes / 2**20, 1), "wal": f"{b.wal_start}-{b.wal_stop}"}
             for b in window.backups], as_json)
    if window.backups and not as_json:
        err.print(f"restorable from {window.earliest:%Y-%m-%d %H:%M:%S}Z to {window.latest:%Y-%m-%d %H:%M:%S}Z "
                  f"(the last archived WAL; later while the cluster runs); repository "
                  f"{window.repository_bytes / 2**20:.1f} MB")


@app.command("restore")
def db_restore(file: Path = typer.Argument(None, help="a file written by twin db backup FILE"),
               to: str = typer.Option(None, "--to", help="a moment with its UTC offset, e.g. "
                                                         "'2026-12-06 10:15:00+08': point-in-time recovery of "
                                                         "the managed cluster from its repository"),
               force: bool = typer.Option(False, "--force", help="replace a database that already holds data")):
    """Restore FILE into the database, which must be empty unless --force (then its contents are replaced).
    With --to instead, bring the managed cluster back to that moment (see: twin db backups)."""
    from twin.backup import BackupError, restore

    if (file is None) == (to is None):
        fail("give either FILE (a dump) or --to MOMENT (point-in-time recovery), not both or neither")
    if to is not None:
        from twin.pitr import ArchiveError, parse_moment

        try:
            reached = archive().restore(parse_moment(to), force)
        except ArchiveError as e:
            fail(str(e))
        console.print(f"restored to {to}; last transaction replayed: {reached or 'none after the base backup'}; "
                      "the database is open for writes on a new timeline")
        return
    try:
        restored = restore(database_url(), file, force)
    except (BackupError, DatabaseError) as e:
        fail(str(e))
    console.print(f"restored {restored.tables} tables from {file}; migration revision {restored.revision} "
                  "(run twin db migrate to bring it to the current one)")
    if restored.skipped_roles:
        err.print(f"[yellow]grants to roles missing here were skipped:[/] {', '.join(restored.skipped_roles)} "
                  "(for an analyst role: twin db analyst-role)")
