"""The `twin` command: the managed database, keys, layers, sample data, ETL and the server."""

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from etl import cli as etl_cli
from sensing import mqtt_cli, simulate_cli
from tiles import cli as tiles_cli
from twin import broker_cli
from twin.cluster import Cluster, ClusterError
from twin.console import JSON_OPTION, cli_actor, console, err, fail, listing
from twin.db import DatabaseError, check_database, database_url, migrate, sync_engine
from twin.logs import configure
from twin.settings import get_settings

app = typer.Typer(help="OneMap Twin — the one-map (一张图) server of Wuxi Xinwu.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The database: the managed local PostGIS, or TWIN_DATABASE_URL.", no_args_is_help=True)
keys_app = typer.Typer(help="Department API keys.", no_args_is_help=True)
layers_app = typer.Typer(help="The layer catalog.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(layers_app, name="layers")
app.add_typer(etl_cli.app, name="etl")
app.add_typer(tiles_cli.app, name="tiles")
app.add_typer(broker_cli.app, name="broker")
app.add_typer(mqtt_cli.app, name="ingest")
app.command("simulate")(simulate_cli.simulate)


@app.callback()
def main() -> None:
    """OneMap Twin — the one-map (一张图) server of Wuxi Xinwu."""
    configure(get_settings())


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


# -- database -----------------------------------------------------------------
@db_app.command("up")
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


@db_app.command("down")
def db_down():
    """Stop the managed PostGIS."""
    try:
        cluster().down()
    except ClusterError as e:
        fail(str(e))
    console.print("stopped")


@db_app.command("status")
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


@db_app.command("url")
def db_url():
    """Print the database URL (with its password: treat it as a secret)."""
    try:
        print(database_url())
    except DatabaseError as e:
        fail(str(e))


@db_app.command("psql")
def db_psql(args: list[str] = typer.Argument(None, help="extra psql arguments")):
    """Open psql on the database."""
    try:
        url = database_url()
    except DatabaseError as e:
        fail(str(e))
    os.execvp("psql", ["psql", url, *(args or [])])


@db_app.command("migrate")
def db_migrate(revision: str = typer.Option("head", help="target revision")):
    """Apply the Alembic migrations."""
    try:
        migrate(revision)
    except DatabaseError as e:
        fail(str(e))
    console.print(f"database migrated to {revision}")


@db_app.command("analyst-role")
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


@db_app.command("backup")
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


@db_app.command("backups")
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


@db_app.command("restore")
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


# -- keys ---------------------------------------------------------------------
@keys_app.command("create")
def keys_create(department: str = typer.Option(..., help="the department, e.g. 生态环境局"),
                layers: str = typer.Option("", help="comma-separated layers it may write"),
                admin: bool = typer.Option(False, help="may manage the catalog and write every layer"),
                role: str = typer.Option(None, help="its role in the case loop: reporter, supervisor, dispatcher, "
                                                    "department or contractor"),
                grids: str = typer.Option("", help="scope: comma-separated grid codes (default: everywhere)"),
                streets: str = typer.Option("", help="scope: comma-separated street codes"),
                classes: str = typer.Option("", help="scope: comma-separated case/component class prefixes, "
                                                     "e.g. C0118,E01")):
    """Create a key; it is printed once, on a line of its own, and stored only hashed."""
    from layers.catalog import catalog
    from twin.auth import ROLES, create_key

    names = [n.strip() for n in layers.split(",") if n.strip()]
    unknown = [n for n in names if n not in catalog()]
    if unknown:
        fail(f"unknown layers: {', '.join(unknown)} (see: twin layers list)")
    if role is not None and role not in ROLES:
        fail(f"unknown role {role}: one of {', '.join(ROLES)}")
    scope = {name: [v.strip() for v in value.split(",") if v.strip()]
             for name, value in (("grids", grids), ("streets", streets), ("classes", classes))}
    with sync_engine().begin() as conn:
        key = create_key(conn, department, names, admin, role=role, **scope)
    err.print(f"key for {department} ({', '.join(names) or 'no layers'}{', admin' if admin else ''}); "
              "shown once, keep it safe:")
    print(key)


@keys_app.command("list")
def keys_list(as_json: bool = JSON_OPTION):
    """List keys (never their secrets)."""
    from twin.auth import list_keys

    with sync_engine().connect() as conn:
        rows = list_keys(conn)
    listing([{"prefix": r["prefix"], "department": r["department"], "layers": ",".join(r["layers"]),
              "admin": r["is_admin"], "created": f"{r['created_at']:%Y-%m-%d %H:%M}",
              "revoked": f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else None} for r in rows], as_json)


@keys_app.command("revoke")
def keys_revoke(prefix: str = typer.Argument(..., help="the key's prefix (the part after twin_)")):
    """Revoke a key at once."""
    from twin.auth import revoke_key

    with sync_engine().begin() as conn:
        if not revoke_key(conn, prefix.removeprefix("twin_").split("_")[0]):
            fail(f"no active key with prefix {prefix}")
    console.print(f"revoked {prefix}")


# -- layers -------------------------------------------------------------------
@layers_app.command("list")
def layers_list(as_json: bool = JSON_OPTION):
    """Print the layer catalog."""
    from layers.catalog import catalog

    listing([{"id": s.id, "名称": s.title.zh, "title": s.title.en, "kind": s.kind, "geometry": s.geometry,
              "department": s.department, "group": s.group, "zoom": f"{s.minzoom}–{s.maxzoom}",
              "fields": len(s.fields)} for s in catalog().values()], as_json)


@layers_app.command("private")
def layers_private(name: str = typer.Argument(..., help="the layer"),
                   private: bool = typer.Option(..., "--on/--off", help="private (reads need a key) or public")):
    """Make a layer private (read only with an admin key or a key of its department or listing it) or public
    again; running servers follow at once."""
    from layers.catalog import catalog
    from twin.access import switch_statement

    if name not in catalog():
        fail(f"unknown layer {name} (see: twin layers list)")
    with sync_engine().begin() as conn:
        conn.execute(switch_statement(name, private, cli_actor(None)))
    console.print(f"{name} is now {'private' if private else 'public'}")


# -- ETL ----------------------------------------------------------------------
# -- sample data, demo, server ---------------------------------------------------
@app.command()
def sample(out: Path = typer.Option(Path("var/sample"), help="directory to write to"),
           scale: int = typer.Option(20_000, help="number of city components"),
           seed: int = typer.Option(42), days: int = typer.Option(90, help="days of hourly readings"),
           pipes: int = typer.Option(None, help="drainage pipes, about (default 2.5 a city component)")):
    """Generate the synthetic district data (streets, grids, roads, rivers, components, sources, stations,
    the drainage network)."""
    from etl.sample import generate

    with console.status("generating") as status:
        files = generate(out, components=scale, seed=seed, days=days, pipes=pipes,
                         progress=lambda stage, done, total: status.update(f"{stage} {done}/{total}"))
    for layer, path in files.items():
        console.print(f"{layer:22} {path}")


@app.command()
def demo(serve: bool = typer.Option(True, help="serve the API after loading"),
         scale: int = typer.Option(20_000, help="number of city components to generate"),
         simulate: bool = typer.Option(True, help="live feeds (twin simulate) while serving")):
    """Load the bundled district dataset (idempotent), then serve it (with live feeds: twin simulate)."""
    from etl.bundle import load_bundle

    settings = get_settings()
    try:
        migrate()
        with console.status("loading the district") as status:
            results = load_bundle(sync_engine(), settings, components=scale,
                                  progress=lambda stage: status.update(stage))
    except DatabaseError as e:
        fail(str(e))
    table = Table("file", "layer", "status", "inserted", "updated", "unchanged", "quarantined")
    for name, layer, r in results:
        table.add_row(name, layer, r.status, *(str(r.counts.get(k, 0)) for k in
                                               ("inserted", "updated", "unchanged", "quarantined")))
    console.print(table)
    if any(r.status != "succeeded" for _, _, r in results):
        fail("some bundled files did not load; see the table above")
    if serve and simulate:
        from sensing.simulate_demo import serve_with_simulator

        base = f"http://{settings.host}:{settings.port}"
        console.print(f"OneMap Twin on {base} (map {base}/map), fed live by twin simulate")
        raise typer.Exit(serve_with_simulator(uvicorn_argv(settings.host, settings.port),
                                              [sys.executable, "-m", "twin.cli", "simulate", *DEMO_FEEDS],
                                              f"{base}/sta/v1.1"))
    if serve:
        run_server(settings.host, settings.port, 1)


DEMO_FEEDS = ["--speed", "60", "--since", "1"]  # a simulated hour a minute, from an hour ago: the map moves


def run_server(host: str, port: int, workers: int) -> None:
    base = f"http://{host}:{port}"
    console.print(f"OneMap Twin on {base}\n  map         {base}/map\n  API         {base}/\n  docs        {base}/docs\n"
                  f"  collections {base}/collections\n  health      {base}/health")
    argv = uvicorn_argv(host, port, workers)
    sys.stdout.flush()
    sys.stderr.flush()
    # the server takes this process's place (and PID): a signal sent to `twin serve` reaches it, none outlives it
    os.execv(argv[0], argv)


def uvicorn_argv(host: str, port: int, workers: int = 1, access_log: bool = False) -> list[str]:
    """How the app is served: uvicorn with httptools and uvloop, idle keep-alive connections closed after
    5 s. The app is plain ASGI (any ASGI server runs it); the reverse proxy bounds request headers
    (docs/deployment.md)."""
    return [sys.executable, "-m", "uvicorn", "--factory", "twin.app:create_app", "--host", host, "--port", str(port),
            "--http", "httptools", "--loop", "uvloop", "--timeout-keep-alive", "5", "--workers", str(workers),
            "--proxy-headers", *([] if access_log else ["--no-access-log"])]


@app.command()
def serve(host: str = typer.Option(None), port: int = typer.Option(None), workers: int = typer.Option(1)):
    """Serve the API with uvicorn (migrating the database first when needed)."""
    settings = get_settings()
    try:
        migrate()
    except DatabaseError as e:
        fail(str(e))
    run_server(host or settings.host, port or settings.port, workers)


if __name__ == "__main__":
    app()
