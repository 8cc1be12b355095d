"""Tile plans: the SQL text of a tile's shape, composed and compiled once, run with each tile's numbers.

A shape is everything about a tile but its place: the grid, the layers with their properties,
filter and as_of, and whether each point layer is clustered at that zoom. Its statement is
composed with SQLAlchemy Core (tiles.sources) the first time the shape is asked for, compiled for
asyncpg (PostgreSQL's own $1, $2 … placeholders, in `positiontup` order) and kept (least recently
used out). A tile of that shape binds its envelope and resolution (`tile_values`) beside the plan's
own values (filter literals, as_of):
values are always parameters, never SQL text, and the one text per shape lets the database
keep it prepared. Except for low zooms of point layers clustered from their points (not from
counted cells, tiles.sources), where every tile is clustered: after five
runs PostgreSQL would switch a prepared statement to its generic plan, which cannot see how many
points the tile's envelope holds and clusters a million points twice as slowly. Those are planned
afresh each time (`prepare` false); planning is nothing beside clustering.
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from tiles.settings import TileSettings
from tiles.request import TileRequest
from tiles.sources import LayerRequest, cell_block, clustered_at, from_cells, tile_statement, tile_values
from tiles.tms import TileAddress

DIALECT = PGDialect_asyncpg()  # compiles to PostgreSQL's own $1, $2 … placeholders, as asyncpg runs them


@dataclass(frozen=True)
class TilePlan:
    sql: str  # PostgreSQL's own $1, $2 … placeholders: run with a raw cursor, no conversion per tile
    names: tuple[str, ...]  # the parameter of each placeholder, in order
    values: dict  # the shape's own parameters (filter literals, as_of, limits)
    prepare: bool  # keep it prepared on each connection

    def params(self, tile: TileAddress, settings: TileSettings) -> list:
        bound = self.values | tile_values(tile, settings)
        return [bound[name] for name in self.names]


def plan_shape(request: TileRequest, settings: TileSettings) -> tuple:
    """The request's shape (tiles.request), and whether counted cells fit its zoom, which changes the SQL too."""
    return request.shape(settings) + (cell_block(request.tile, settings) is not None,)


def compile_plan(requests: list[LayerRequest], tile: TileAddress, settings: TileSettings) -> TilePlan:
    """The plan of the shape of `tile` with these layers (any tile of the same shape gives the same plan)."""
    compiled = tile_statement(requests, tile, settings).compile(
        dialect=DIALECT, compile_kwargs={"render_postcompile": True})
    own = tile_values(tile, settings)
    values = {name: value for name, value in compiled.construct_params().items() if name not in own}
    return TilePlan(str(compiled), tuple(compiled.positiontup), values, prepare=not any(
        clustered_at(r.spec, tile.z, settings) and not from_cells(r, tile, settings) for r in requests))


class PlanCache:
    """Plans by shape, the least recently used dropped past `size`."""

    def __init__(self, size: int):
        self.size = size
        self._plans: OrderedDict[tuple, TilePlan] = OrderedDict()

    def get(self, shape: tuple, build: Callable[[], TilePlan]) -> TilePlan:
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._plans[shape] = build()
            if len(self._plans) > self.size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(shape)
        return plan
