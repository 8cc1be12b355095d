"""What the `twin` commands print: errors, listings (a table, tab-separated lines or JSON) and the actor they
write as."""

import json
import os

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)
JSON_OPTION = typer.Option(False, "--json", help="one JSON array of objects, for scripts")


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


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


def cli_actor(department: str | None) -> str:
    return f"cli:{department or os.environ.get('USER', 'unknown')}"
