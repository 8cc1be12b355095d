"""The `twin` command: the managed database, keys, layers, sample data, ETL and the server."""

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from etl import cli as etl_cli
from layers import cli as layers_cli
from sensing import mqtt_cli, simulate_cli
from tiles import cli as tiles_cli
from twin import broker_cli, db_cli
from twin.console import JSON_OPTION, console, err, fail, listing
from twin.db import DatabaseError, migrate, sync_engine
from twin.logs import configure
from twin.settings import get_settings

app = typer.Typer(help="OneMap Twin — the one-map (一张图) server of Wuxi Xinwu.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Department API keys.", no_args_is_help=True)
app.add_typer(db_cli.app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(layers_cli.app, name="layers")
app.add_typer(etl_cli.app, name="etl")
app.add_typer(tiles_cli.app, name="tiles")
app.add_typer(broker_cli.app, name="broker")
app.add_typer(mqtt_cli.app, name="ingest")
app.command("simulate")(simulate_cli.simulate)


@app.callback()
def main() -> None:
    """OneMap Twin — the one-map (一张图) server of Wuxi Xinwu."""
    configure(get_settings())


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
    from layers.registry import refresh
    from twin.auth import ROLES, create_key

    with sync_engine().connect() as conn:
        refresh(conn)  # the layers registered at run time too
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
