"""Routing is data: where a case lies (its grid and street, a spatial join on the `grids` and `streets` layers)
and the responsibility table (权责清单, `cases.responsibility`) say which department handles it and how many hours
each stage may take.

A row matches a case when the case's class starts with its `class_prefix` ('' matches every class) and its
`area` is the case's grid, the case's street or '*'; the most specific row wins (longer class prefix first,
then grid before street before '*'). The table is loaded from cases/data/responsibility.csv when the server
starts and the file differs from what was loaded last (by hash), so an edit of the file, or of the table itself,
changes routing with no change of code; the table is read on every step.
"""

import csv
import hashlib
import io
import logging
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from twin.errors import ApiError

log = logging.getLogger("twin.cases")
TABLE_FILE = Path(__file__).parent / "data" / "responsibility.csv"
HOURS = ("register_h", "dispatch_h", "handle_h", "verify_h", "close_h")
COLUMNS = ("class_prefix", "area", "department", *HOURS)


class Route(NamedTuple):
    department: str
    hours: dict[str, float]


ROUTE = text("SELECT department, " + ", ".join(HOURS) + " FROM cases.responsibility "
             "WHERE starts_with(:class, class_prefix) AND area IN (coalesce(:grid, '*'), coalesce(:street, '*'), '*') "
             "ORDER BY length(class_prefix) DESC, CASE area WHEN :grid THEN 0 WHEN :street THEN 1 ELSE 2 END LIMIT 1")


async def route(conn: AsyncConnection, class_code: str, grid: str | None, street: str | None) -> Route:
    row = (await conn.execute(ROUTE, {"class": class_code, "grid": grid, "street": street})).first()
    if row is None:
        raise ApiError(409, "no_route", f"The responsibility table has no row for class {class_code} in grid {grid} "
                       f"(street {street}); add one (a catch-all has class_prefix '' and area '*').")
    return Route(row.department, {h: row._mapping[h] for h in HOURS})


def read_table(content: bytes) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    for number, row in enumerate(rows, start=2):
        missing = [c for c in COLUMNS if row.get(c) is None or (c != "class_prefix" and not row[c].strip())]
        if missing:
            raise ValueError(f"{TABLE_FILE.name} line {number}: missing {', '.join(missing)}")
        for h in HOURS:
            row[h] = float(row[h])
    return rows


async def load(engine: AsyncEngine, path: Path = TABLE_FILE) -> bool:
    """Replace the table with the file's rows when the file changed since it was last loaded; whether it did."""
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    async with engine.begin() as conn:
        await conn.execute(text("LOCK TABLE cases.routing_source IN EXCLUSIVE MODE"))  # one loader at a time
        if (await conn.execute(text("SELECT sha256 FROM cases.routing_source"))).scalar() == digest:
            return False
        rows = read_table(content)
        await conn.execute(text("DELETE FROM cases.responsibility"))
        await conn.execute(text(f"INSERT INTO cases.responsibility ({', '.join(COLUMNS)}) "
                                f"VALUES ({', '.join(':' + c for c in COLUMNS)})"), rows)
        await conn.execute(text("DELETE FROM cases.routing_source"))
        await conn.execute(text("INSERT INTO cases.routing_source (sha256) VALUES (:d)"), {"d": digest})
    log.info("loaded the responsibility table from %s (%d rows)", path, len(rows))
    return True
