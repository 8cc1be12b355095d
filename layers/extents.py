"""A layer's extent — its bounding box, and its time span when it has a time field — for /collections and
TileJSON, which map clients ask for on every page load.

Each is a whole-table aggregate (ST_Extent over a million points takes half a second), so it is kept
per layer and worked out again only after the layer changes. It follows the tile cache's change
follower (tiles.cache.TileCache): an extent is kept only while the follower is live, and not kept
when a change to its layer arrived while it was being worked out — the rule tiles are cached by.
"""

from dataclasses import dataclass
from datetime import datetime

from fastapi import Request
from sqlalchemy import func, select

from layers.catalog import LayerSpec
from layers.tables import current


@dataclass(frozen=True)
class Extent:
    bbox: tuple[float, float, float, float] | None  # lon/lat; None when the layer is empty
    interval: tuple[datetime, datetime] | None  # of the time field; None without one or when empty


async def extent(request: Request, spec: LayerSpec) -> Extent:
    memory = request.app.state.tile_provider.memory
    kept: dict = request.app.state.extents  # layer → (the follower's mark, Extent)
    mark = memory.generation((spec.id,))
    found = kept.get(spec.id)
    if memory.live and found is not None and found[0] == mark:
        return found[1]
    table = current(spec)
    bbox = interval = None
    async with request.app.state.read_engine.connect() as conn:
        if spec.geometry:
            box = func.ST_Extent(table.c.geom)
            row = (await conn.execute(select(func.ST_XMin(box), func.ST_YMin(box), func.ST_XMax(box),
                                             func.ST_YMax(box)))).first()
            bbox = None if row is None or row[0] is None else tuple(row)
        if spec.time_field:
            moment = table.c[spec.time_field]
            row = (await conn.execute(select(func.min(moment), func.max(moment)))).first()
            interval = None if row is None or row[0] is None else tuple(row)
    worked_out = Extent(bbox, interval)
    if memory.live and memory.generation((spec.id,)) == mark:
        kept[spec.id] = (mark, worked_out)
    return worked_out
