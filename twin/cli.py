"""The `twin` command: the managed database, keys, layers, sample data, ETL and the server."""

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from etl import cli as etl_cli
from tiles import cli as tiles_cli
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


@app.callback()
def main() -> None:
    """OneMap Twin — the one-map (一张图) server of Wuxi Xinwu."""
    configure(get_settings())


def cluster() -> Cluster:
    return Cluster(get_settings().data_dir)


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
            status = cluster().up()
        except ClusterError as e:
            fail(str(e))
        console.print(f"PostGIS running on 127.0.0.1:{status.port} (data in {status.pgdata})")
    db_migrate("head")


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
def db_analyst_role(name: str = typer.Option("twin_analyst", help="the role's name")):
    """Create or refresh a read-only role for analysts (layers, history, change log; never the API keys)
    with a new password, and print its connection URL (a secret)."""
    from twin.analyst import AnalystRoleError, analyst_url, grant_analyst_role

    try:
        with sync_engine().begin() as conn:
            password = grant_analyst_role(conn, name)
        url = analyst_url(database_url(), name, password)
    except (AnalystRoleError, DatabaseError) as e:
        fail(str(e))
    err.print(f"read-only role {name} ready; its URL (shown once, keep it safe):")
    print(url)


@db_app.command("backup")
def db_backup(file: Path = typer.Argument(..., help="the backup file to write (pg_dump custom format)")):
    """Back up the whole database (layers, history, change log, runs, keys) to FILE."""
    from twin.backup import BackupError, backup

    try:
        size = backup(database_url(), file)
    except (BackupError, DatabaseError) as e:
        fail(str(e))
    console.print(f"backed up to {file} ({size / 2**20:.1f} MB)")


@db_app.command("restore")
def db_restore(file: Path = typer.Argument(..., help="a file written by twin db backup"),
               force: bool = typer.Option(False, "--force", help="replace a database that already holds data")):
    """Restore FILE into the database, which must be empty unless --force (then its contents are replaced)."""
    from twin.backup import BackupError, restore

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
                admin: bool = typer.Option(False, help="may manage the catalog and write every layer")):
    """Create a key; it is printed once, on a line of its own, and stored only hashed."""
    from layers.catalog import catalog
    from twin.auth import create_key

    names = [n.strip() for n in layers.split(",") if n.strip()]
    unknown = [n for n in names if n not in catalog()]
    if unknown:
        fail(f"unknown layers: {', '.join(unknown)} (see: twin layers list)")
    with sync_engine().begin() as conn:
        key = create_key(conn, department, names, admin)
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
           seed: int = typer.Option(42), days: int = typer.Option(90, help="days of hourly readings")):
    """Generate the synthetic district data (streets, grids, roads, rivers, components, sources, stations)."""
    from etl.sample import generate

    with console.status("generating") as status:
        files = generate(out, components=scale, seed=seed, days=days,
                         progress=lambda stage, done, total: status.update(f"{stage} {done}/{total}"))
    for layer, path in files.items():
        console.print(f"{layer:22} {path}")


@app.command()
def demo(serve: bool = typer.Option(True, help="serve the API after loading"),
         scale: int = typer.Option(20_000, help="number of city components to generate")):
    """Load the bundled district dataset (idempotent), then serve it."""
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
    if serve:
        run_server(settings.host, settings.port, 1)


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
