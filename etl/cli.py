"""`twin etl …`: loading files into the layers, the runs, their quarantine, and reverting a run."""

import json
from pathlib import Path

import typer
from rich.table import Table

from twin.console import JSON_OPTION, cli_actor, console, err, fail, listing
from twin.db import sync_engine
from twin.settings import get_settings

app = typer.Typer(help="Load data into the layers.", no_args_is_help=True)


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


def _finish(result) -> None:
    """Print a run's summary; a run that did not succeed ends the command with a non-zero status."""
    _print_result(result)
    if result.status != "succeeded":
        raise typer.Exit(1)


@app.command("run")
def etl_run(job: str, file: Path, crs: str = typer.Option(None, help="source CRS: EPSG code, GCJ02 or BD09"),
            layer: str = typer.Option(None, help="target layer (default: the job's first)"),
            source_layer: str = typer.Option(None, help="layer inside a GeoPackage or zip"),
            mode: str = typer.Option("upsert", help="upsert (never deletes) or replace (snapshot)"),
            department: str = typer.Option(None, help="the department the data comes from")):
    """Load FILE into a layer with JOB."""
    from etl.run import JobError, run_file
    from layers.registry import refresh

    with sync_engine().connect() as conn:
        refresh(conn)  # the layers registered at run time too
    with console.status("starting") as status:
        try:
            result = run_file(sync_engine(), job, file, layer=layer, crs=crs, mode=mode, department=department,
                              actor=cli_actor(department),
                              source_layer=source_layer, progress=lambda stage: status.update(stage))
        except JobError as e:
            fail(str(e))
    _finish(result)


@app.command("runs")
def etl_runs(limit: int = 20, as_json: bool = JSON_OPTION):
    """The latest runs."""
    from sqlalchemy import text

    with sync_engine().connect() as conn:
        rows = conn.execute(text("SELECT id, job, layer, file_name AS file, status, read, inserted, updated, "
                                 "unchanged, deleted, quarantined, started_at FROM twin.etl_run "
                                 "ORDER BY id DESC LIMIT :n"), {"n": limit}).mappings().all()
    listing([dict(r) | {"started_at": f"{r['started_at']:%Y-%m-%d %H:%M:%S%z}"} for r in rows], as_json)


@app.command("raster")
def etl_raster(file: Path, layer: str = typer.Option("imagery", help="the raster layer"),
               department: str = typer.Option(None, help="the department the data comes from")):
    """Convert FILE to a Cloud-Optimized GeoTIFF and make it the raster of LAYER (recorded as a run)."""
    from etl.run import JobError, run_raster

    with console.status("converting to COG"):
        try:
            result = run_raster(sync_engine(), file, layer=layer, raster_dir=get_settings().data_dir / "rasters",
                                department=department,
                                actor=cli_actor(department))
        except JobError as e:
            fail(str(e))
    _finish(result)


@app.command("quarantine")
def etl_quarantine(run_id: int, as_json: bool = JSON_OPTION):
    """The rows a run rejected, with the reasons."""
    from sqlalchemy import text

    with sync_engine().connect() as conn:
        rows = conn.execute(text("SELECT row_number AS row, reason, record FROM twin.quarantine WHERE run_id = :id "
                                 "ORDER BY row_number"), {"id": run_id}).mappings().all()
    listing([dict(r) if as_json else dict(r) | {"record": json.dumps(r["record"], ensure_ascii=False, default=str)}
             for r in rows], as_json)


@app.command("revert")
def etl_revert(run_id: int):
    """Undo everything run RUN_ID did, unless later changes touched the same features (then nothing changes)."""
    from layers.registry import refresh
    from layers.revert import RevertError, revert_run

    try:
        with sync_engine().begin() as conn:
            refresh(conn)  # the layers registered at run time too
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
