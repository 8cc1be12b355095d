"""The `twin` command: the managed database, keys, layers, sample data, ETL and the server."""

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tiles import cli as tiles_cli
from twin.cluster import Cluster, ClusterError
from twin.db import DatabaseError, check_database, database_url, migrate, sync_engine
from twin.logs import configure
from twin.settings import get_settings

app = typer.Typer(help="OneMap Twin — the one-map (一张图) server of Wuxi Xinwu.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The database: the managed local PostGIS, or TWIN_DATABASE_URL.", no_args_is_help=True)
keys_app = typer.Typer(help="Department API keys.", no_args_is_help=True)
layers_app = typer.Typer(help="The layer catalog.", no_args_is_help=True)
etl_app = typer.Typer(help="Load data into the layers.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(layers_app, name="layers")
app.add_typer(etl_app, name="etl")
app.add_typer(tiles_cli.app, name="tiles")
console = Console()
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """OneMap Twin — the one-map (一张图) server of Wuxi Xinwu."""
    configure(get_settings())


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


JSON_OPTION = typer.Option(False, "--json", help="one JSON array of objects, for scripts")


def listing(rows: list[dict], as_json: bool) -> None:
    """Rows of a listing: a table on a terminal; else one tab-separated line per row under a header line, with
    full values (rich would wrap or cut them to 80 columns); or, with --json, a JSON array of objects."""
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, default=str, indent=1))
    elif not rows:
        err.print("(none)")
    elif console.is_terminal:
        table = Table(*rows[0])
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)
    else:
        print("\t".join(rows[0]))
        for row in rows:
            print("\t".join("" if v is None else str(v).replace("\t", " ").replace("\n", " ") for v in row.values()))


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
        conn.execute(switch_statement(name, private, _cli_actor(None)))
    console.print(f"{name} is now {'private' if private else 'public'}")


# -- ETL ----------------------------------------------------------------------
def _print_result(result) -> None:
    table = Table(title=f"run {result.run_id}: {result.status}")
    for name in ("read", "inserted", "updated", "unchanged", "deleted", "repaired", "quarantined"):
        table.add_column(name, justify="right")
    if result.counts:
        table.add_row(*(str(result.counts.get(n, 0)) for n in ("read", "inserted", "updated", "unchanged",
                                                               "deleted", "repaired", "quarantined")))
    console.print(table)
    if result.error:
        err.print(f"[red]{result.error}[/]")
    if result.counts.get("quarantined"):
        console.print(f"see the rejected rows: twin etl quarantine {result.run_id}")
    if result.ignored:
        console.print(f"[yellow]source columns not loaded (no matching field):[/] {', '.join(result.ignored)}")


def _cli_actor(department: str | None) -> str:
    return f"cli:{department or os.environ.get('USER', 'unknown')}"


def _finish(result) -> None:
    """Print a run's summary; a run that did not succeed ends the command with a non-zero status."""
    _print_result(result)
    if result.status != "succeeded":
        raise typer.Exit(1)


@etl_app.command("run")
def etl_run(job: str, file: Path, crs: str = typer.Option(None, help="source CRS: EPSG code, GCJ02 or BD09"),
            layer: str = typer.Option(None, help="target layer (default: the job's first)"),
            source_layer: str = typer.Option(None, help="layer inside a GeoPackage or zip"),
            mode: str = typer.Option("upsert", help="upsert (never deletes) or replace (snapshot)"),
            department: str = typer.Option(None, help="the department the data comes from")):
    """Load FILE into a layer with JOB."""
    from etl.run import JobError, run_file

    with console.status("starting") as status:
        try:
            result = run_file(sync_engine(), job, file, layer=layer, crs=crs, mode=mode, department=department,
                              actor=_cli_actor(department),
                              source_layer=source_layer, progress=lambda stage: status.update(stage))
        except JobError as e:
            fail(str(e))
    _finish(result)


@etl_app.command("runs")
def etl_runs(limit: int = 20, as_json: bool = JSON_OPTION):
    """The latest runs."""
    from sqlalchemy import text

    with sync_engine().connect() as conn:
        rows = conn.execute(text("SELECT id, job, layer, file_name AS file, status, read, inserted, updated, "
                                 "unchanged, deleted, quarantined, started_at FROM twin.etl_run "
                                 "ORDER BY id DESC LIMIT :n"), {"n": limit}).mappings().all()
    listing([dict(r) | {"started_at": f"{r['started_at']:%Y-%m-%d %H:%M:%S%z}"} for r in rows], as_json)


@etl_app.command("raster")
def etl_raster(file: Path, layer: str = typer.Option("imagery", help="the raster layer"),
               department: str = typer.Option(None, help="the department the data comes from")):
    """Convert FILE to a Cloud-Optimized GeoTIFF and make it the raster of LAYER (recorded as a run)."""
    from etl.run import JobError, run_raster

    with console.status("converting to COG"):
        try:
            result = run_raster(sync_engine(), file, layer=layer, raster_dir=get_settings().data_dir / "rasters",
                                department=department,
                                actor=_cli_actor(department))
        except JobError as e:
            fail(str(e))
    _finish(result)


@etl_app.command("quarantine")
def etl_quarantine(run_id: int, as_json: bool = JSON_OPTION):
    """The rows a run rejected, with the reasons."""
    from sqlalchemy import text

    with sync_engine().connect() as conn:
        rows = conn.execute(text("SELECT row_number AS row, reason, record FROM twin.quarantine WHERE run_id = :id "
                                 "ORDER BY row_number"), {"id": run_id}).mappings().all()
    listing([dict(r) if as_json else dict(r) | {"record": json.dumps(r["record"], ensure_ascii=False, default=str)}
             for r in rows], as_json)


@etl_app.command("revert")
def etl_revert(run_id: int):
    """Undo everything run RUN_ID did, unless later changes touched the same features (then nothing changes)."""
    from layers.revert import RevertError, revert_run

    try:
        with sync_engine().begin() as conn:
            result = revert_run(conn, run_id)
    except RevertError as e:
        if e.conflicts:
            table = Table("fid", "change", "operation", "version", "time", "actor", title="later changes")
            for c in e.conflicts:
                table.add_row(str(c["fid"]), str(c["change"]), c["operation"], str(c["version"]), c["time"], c["actor"])
            console.print(table)
        fail(str(e))
    console.print(f"run {run_id} reverted on {result.layer} as '{result.actor}': " +
                  ", ".join(f"{n} {what}" for what, n in result.counts.items()))


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
    """How the app is served: cached tiles answered by its own HTTP protocol (tiles.fastpath), which also
    bounds request headers (twin.limits)."""
    return [sys.executable, "-m", "uvicorn", "--factory", "twin.app:create_app", "--host", host, "--port", str(port),
            "--http", "tiles.fastpath:TileProtocol", "--loop", "uvloop", "--workers", str(workers), "--proxy-headers",
            *([] if access_log else ["--no-access-log"])]


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
