"""What a tile URL asks for, validated: the tile, its layers and what shapes them.

The tile fast path (tiles.fastpath, public tiles) and the routes (tiles.routes, the others) make a
tile from it; the routes' FastAPI dependencies check the same parameters with the same functions and
document them. Anything wrong is an ApiError naming the parameter.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from layers import crs as crs_
from layers.catalog import LayerSpec
from layers.cql2 import LANGS
from layers.params import parse_as_of, parse_filter, parse_properties
from tiles.params import onemap_layers, tile_numbers, vector_spec
from tiles.settings import TileSettings
from tiles.sources import LayerRequest, clustered_at
from tiles.tms import TileAddress, address
from twin.errors import ApiError


@dataclass(frozen=True)
class TileRequest:
    tile: TileAddress
    layers: tuple[LayerSpec, ...]
    properties: tuple[tuple[str, ...], ...]  # each layer's, in order
    moment: datetime | None = None
    filter: tuple[str, str, str | None] | None = None  # (text, filter-lang, filter-crs) as given, single layer only

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.id for spec in self.layers)

    def shape(self, settings: TileSettings) -> tuple:
        """Everything that decides the tile's SQL text (tiles.plans) — all but the tile's place."""
        layers = tuple((spec.id, names, clustered_at(spec, self.tile.z, settings))
                       for spec, names in zip(self.layers, self.properties))
        return self.tile.tms, layers, self.moment, self.filter

    def layer_requests(self) -> list[LayerRequest]:
        where = None if self.filter is None else parse_filter(*self.filter)
        return [LayerRequest(spec, names, self.moment, where) for spec, names in zip(self.layers, self.properties)]


def _filter(query: Mapping[str, str]) -> tuple[str, str, str | None] | None:
    text, lang, crs = query.get("filter"), query.get("filter-lang", "cql2-text"), query.get("filter-crs")
    if lang not in LANGS:
        raise ApiError(400, "invalid_parameter", f"filter-lang must be one of {', '.join(LANGS)}",
                       where="query.filter-lang")
    crs_.parse(crs, "query.filter-crs")
    return None if text is None else (text, lang, crs)


def tile_request(path: Mapping[str, str | None], query: Mapping[str, str],
                 hidden: frozenset[str] = frozenset()) -> TileRequest:
    """A tile URL's request: `path` has its tms, z, y and x, and its layer unless it is the one-map tile."""
    z, y, x = tile_numbers(path)
    if path.get("layer") is None:
        return onemap_tile(path["tms"], z, y, x, query, hidden)
    return layer_tile(path["layer"], path["tms"], z, y, x, query)


def layer_tile(layer: str, tms: str, z: int, y: int, x: int, query: Mapping[str, str]) -> TileRequest:
    """`/collections/{layer}/tiles/{tms}/{z}/{y}/{x}`: one layer, out of its zoom range a 404."""
    spec = vector_spec(layer)
    tile = address(tms, z, x, y)
    selected = parse_properties(query.get("properties"))
    moment = parse_as_of(query.get("as_of"))
    where = _filter(query)
    if not spec.minzoom <= tile.z <= spec.maxzoom:
        raise ApiError(404, "zoom_out_of_range", f"{spec.id} is drawn at zooms {spec.minzoom}..{spec.maxzoom} "
                       f"only, not at {tile.z}.", where="path.z")
    return TileRequest(tile, (spec,), (tuple(selected.fields(spec)),), moment, where)


def onemap_tile(tms: str, z: int, y: int, x: int, query: Mapping[str, str],
                hidden: frozenset[str] = frozenset()) -> TileRequest:
    """`/tiles/onemap/{tms}/{z}/{y}/{x}`: the layers asked for (default all) visible at z, every field,
    but the private layers `hidden` from the caller (twin.access)."""
    tile = address(tms, z, x, y)
    moment = parse_as_of(query.get("as_of"))
    chosen = tuple(s for s in onemap_layers(query.get("layers"), tile.z) if s.id not in hidden)
    return TileRequest(tile, chosen, tuple(tuple(f.name for f in spec.fields) for spec in chosen), moment)
