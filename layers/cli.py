"""`twin layers`: the layer catalog, and layers registered, changed, archived and restored at run time
(layers.registry). Running servers follow each change at once."""

from pathlib import Path

import typer

from layers import registry
from layers.catalog import catalog
from twin.access import switch_statement
from twin.console import JSON_OPTION, cli_actor, console, fail, listing
from twin.db import sync_engine

app = typer.Typer(help="The layer catalog.", no_args_is_help=True)
ALLOW_LOSS = typer.Option(False, "--allow-loss", help="take a change that could refuse or lose stored data (its "
                                                      "values stay in the layer's history)")


def _catalog():
    with sync_engine().connect() as conn:
        registry.refresh(conn)
    return catalog()


def _step(run) -> None:
    try:
        with sync_engine().begin() as conn:
            step = run(conn)
    except registry.SpecError as e:
        fail(f"{e.where}: {e.detail}")
    if step is None:
        console.print("unchanged")
        return
    console.print(f"{step.layer}: {step.change}, version {step.version}" + (f" ({step.note})" if step.note else ""))


def _spec(path: Path):
    try:
        body = path.read_bytes()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    try:
        return registry.parse(body, "json" if path.suffix == ".json" else "toml")
    except registry.SpecError as e:
        fail(f"{path}: {e.detail}")


@app.command("list")
def layers_list(as_json: bool = JSON_OPTION):
    """Print the layer catalog."""
    listing([{"id": s.id, "名称": s.title.zh, "title": s.title.en, "kind": s.kind, "geometry": s.geometry,
              "department": s.department, "group": s.group, "zoom": f"{s.minzoom}–{s.maxzoom}",
              "fields": len(s.fields)} for s in _catalog().values()], as_json)


@app.command("add")
def add(spec: Path = typer.Argument(..., help="the layer's spec, TOML or .json")):
    """Register a layer: its table, history, triggers and indexes, its place in every API and the map."""
    parsed = _spec(spec)
    _step(lambda conn: registry.register(conn, parsed, cli_actor(None)))


@app.command("change")
def change(spec: Path = typer.Argument(..., help="the layer's new spec, TOML or .json"), allow_loss: bool = ALLOW_LOSS):
    """Change a layer's spec, as a new version."""
    parsed = _spec(spec)
    _step(lambda conn: registry.change(conn, parsed, cli_actor(None), allow_loss))


@app.command("archive")
def archive(name: str = typer.Argument(..., help="the layer")):
    """Take a layer off the map; its data, history and change log are kept, to be restored."""
    _step(lambda conn: registry.archive(conn, name, cli_actor(None)))


@app.command("restore")
def restore(name: str = typer.Argument(..., help="the archived layer")):
    """Put an archived layer back on the map."""
    _step(lambda conn: registry.restore(conn, name, cli_actor(None)))


@app.command("revert")
def revert(name: str = typer.Argument(..., help="the layer"), version: int = typer.Argument(..., min=1),
           allow_loss: bool = ALLOW_LOSS):
    """Take a layer back to the spec of an earlier version, as a new version."""
    _step(lambda conn: registry.revert(conn, name, version, cli_actor(None), allow_loss))


@app.command("versions")
def versions(name: str = typer.Argument(..., help="the layer"), as_json: bool = JSON_OPTION):
    """Every version of a layer's spec: what changed, who, when, and the DDL it ran."""
    with sync_engine().connect() as conn:
        found = registry.versions(conn, name)
    if not found:
        fail(f"no layer {name} was ever registered (see: twin layers list)")
    listing([{"version": v["version"], "change": v["change"], "note": v["note"] or "", "by": v["changed_by"],
              "at": v["changed_at"], "ddl": len(v["ddl"])} for v in found], as_json)


@app.command("private")
def layers_private(name: str = typer.Argument(..., help="the layer"),
                   private: bool = typer.Option(..., "--on/--off", help="private (reads need a key) or public")):
    """Make a layer private (read only with an admin key or a key of its department or listing it) or public
    again; running servers follow at once."""
    if name not in _catalog():
        fail(f"unknown layer {name} (see: twin layers list)")
    with sync_engine().begin() as conn:
        conn.execute(switch_statement(name, private, cli_actor(None)))
    console.print(f"{name} is now {'private' if private else 'public'}")
