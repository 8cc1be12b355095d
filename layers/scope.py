"""A scoped key's writes: a key limited to grids, streets or classes (twin.auth.Principal.covers) may write only
features inside its scope, and may not move one out of it. The grid and street of a feature come from the
layers of those areas (`area = "grid"`, `"street"` in their specs); its class, for a layer keyed by component codes, from the code (`C` + 大类 + 小类,
the case loop's class of a component problem)."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

import shapely

from layers.catalog import SRID, LayerSpec, with_area
from twin.auth import Principal
from twin.errors import ApiError


def _place():
    grids, streets = with_area("grid").table, with_area("street").table  # validated identifiers (catalog.NAME)
    return text(f"SELECT (SELECT code FROM {grids} WHERE ST_Intersects(geom, g) ORDER BY code LIMIT 1), "
                f"(SELECT code FROM {streets} WHERE ST_Intersects(geom, g) ORDER BY code LIMIT 1) "
                f"FROM ST_GeomFromWKB(:wkb, {SRID}) AS g")


def _class_of(spec: LayerSpec, row) -> str | None:
    field = next((f.name for f in spec.fields if f.check == "component_code"), None)
    code = row._mapping.get(field) if field else None
    return f"C{code[6:10]}" if isinstance(code, str) and len(code) == 16 else None


async def place(conn: AsyncConnection, geometry: shapely.Geometry) -> tuple[str | None, str | None]:
    """(grid code, street code) where a geometry (in the storage CRS) lies."""
    return tuple((await conn.execute(_place(), {"wkb": shapely.to_wkb(geometry)})).one())


async def require_scope(conn: AsyncConnection, principal: Principal, spec: LayerSpec, before, after) -> None:
    """Nothing when a write from row `before` to row `after` (None for a creation or a deletion) stays in the key's
    scope; else a 403. Called inside the write's transaction, so a refusal undoes it."""
    if not principal.scoped or principal.is_admin or not spec.geometry:
        return
    for row, what in ((before, "is"), (after, "would be")):
        if row is None:
            continue
        grid, street = await place(conn, shapely.from_wkb(bytes(row.geom.data)))
        if not principal.covers(grid, street, _class_of(spec, row)):
            raise ApiError(403, "outside_scope", f"Feature {row.fid} {what} in grid {grid}, street {street}: "
                           f"outside the scope of the key of {principal.department} ({principal.scope_text()}).",
                           where="geometry" if row is after else "path.fid")
