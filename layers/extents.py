"""A layer's extent — its bounding box, and its time span when it has a time field — for /collections and
TileJSON, which map clients ask for on every page load.

Each is a whole-table aggregate (ST_Extent over a million points takes half a second, over ten
million 1.4 s), so it is kept per layer and worked out again after the layer changes — in the
background: until then the extent known before the change is served. They are first worked out as the
server starts (`warm`), so no page load waits for the aggregate. It follows the tile cache's change follower (tiles.cache.TileCache): an
extent is kept only while the follower is live, and not kept when a change to its layer arrived while
it was being worked out — the rule tiles are cached by.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request
from sqlalchemy import func, select

from layers.catalog import LayerSpec
from layers.tables import current

log = logging.getLogger("twin.extents")


@dataclass(frozen=True)
class Extent:
    bbox: tuple[float, float, float, float] | None  # lon/lat; None when the layer is empty
    interval: tuple[datetime, datetime] | None  # of the time field; None without one or when empty


async def extent(request: Request, spec: LayerSpec) -> Extent:
    app = request.app
    memory = app.state.tile_provider.memory
    found = app.state.extents.get(spec.id)  # layer → (the follower's mark, Extent)
    if not memory.live or found is None:
        return await _work_out(app, spec)
    if found[0] != memory.generation((spec.id,)) and spec.id not in app.state.extent_updates:
        task = asyncio.create_task(_work_out(app, spec), name=f"extent-{spec.id}")
        app.state.extent_updates[spec.id] = task
        task.add_done_callback(lambda done: _updated(app, spec.id, done))
    return found[1]


async def warm(app, specs: list[LayerSpec]) -> None:
    """Work out every layer's extent, one after the other, before anyone asks (run as the server starts)."""
    try:
        for spec in specs:
            if spec.id not in app.state.extents:
                await _work_out(app, spec)
    except Exception as e:  # the database is not there yet: the first request works it out
        log.warning("extents not worked out at start: %s", e)


def _updated(app, layer: str, task: asyncio.Task) -> None:
    app.state.extent_updates.pop(layer, None)
    if not task.cancelled() and task.exception() is not None:  # the next request tries again
        log.warning("extent of %s not worked out: %s", layer, task.exception())


async def _work_out(app, spec: LayerSpec) -> Extent:
    memory = app.state.tile_provider.memory
    mark = memory.generation((spec.id,))
    table = current(spec)
    bbox = interval = None
    async with app.state.read_engine.connect() as conn:
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
        app.state.extents[spec.id] = (mark, worked_out)
    return worked_out
