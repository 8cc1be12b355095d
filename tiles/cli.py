"""`twin tiles …`: tile commands (the offline PMTiles package)."""

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from twin.db import DatabaseError, sync_engine

app = typer.Typer(help="Vector and raster tiles.", no_args_is_help=True)
err = Console(stderr=True)


def _fail(message: str):
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        _fail(f"--bbox takes west,south,east,north in degrees (e.g. 120.30,31.45,120.60,31.62), not {text!r}")
    return west, south, east, north


@app.command("export")
def export_command(out: Path = typer.Argument(..., help="the .pmtiles file to write"),
                   bbox: str = typer.Option(..., help="west,south,east,north in degrees (CGCS2000/WGS84)"),
                   minzoom: int = typer.Option(8), maxzoom: int = typer.Option(14),
                   layers: str = typer.Option("", help="comma-separated vector layers (default: all)"),
                   max_tiles: int = typer.Option(50_000, help="refuse to render more tiles than this")):
    """Write the vector layers of an area as a PMTiles archive, for maps without the server."""
    from layers.catalog import get_layer, vector_layers
    from layers.registry import refresh
    from tiles.export import ExportError, export

    with sync_engine().connect() as conn:
        refresh(conn)  # the layers registered at run time too
    names = [n.strip() for n in layers.split(",") if n.strip()]
    specs = [get_layer(n) for n in names] if names else vector_layers()
    unknown = [n for n, s in zip(names, specs) if s is None or s.kind != "vector"]
    if unknown:
        _fail(f"not vector layers: {', '.join(unknown)} (see: twin layers list)")
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("rendering tiles", total=None)
            result = export(sync_engine(), out, _bbox(bbox), minzoom, maxzoom, specs, max_tiles,
                            lambda done, total: progress.update(task, completed=done, total=total))
    except (ExportError, DatabaseError) as e:
        _fail(str(e))
    err.print(f"wrote {out}: {result.tiles} tiles with features of {result.visited} rendered, "
              f"{result.bytes / 1024:.0f} KiB")
