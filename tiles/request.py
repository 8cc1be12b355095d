"""What a tile URL asks for, validated: the tile URLs, the tile, its layers and what shapes them.

The one parser of tile requests. The tile fast path (tiles.fastpath, public tiles) calls
`tile_request` on a cache miss only (a cached tile has passed it); the routes (tiles.routes, every
other tile request) call it through the FastAPI dependencies below, whose parameters document the
API. Anything wrong is an ApiError naming the parameter. The parameters arrive as text and are
checked here, not by FastAPI's types, so both doors refuse a bad request with the same words.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from fastapi import Path, Query, Request
from starlette.routing import compile_path

from layers import crs as crs_
from layers.catalog import LayerSpec
from layers.cql2 import LANGS
from layers.params import parse_as_of, parse_filter, parse_properties
from tiles.params import onemap_layers, tile_numbers, vector_spec
from tiles.settings import TileSettings
from tiles.sources import LayerRequest, clustered_at
from tiles.tms import TileAddress, address
from twin.access import hidden_layers
from twin.errors import ApiError

LAYER_TILE = "/collections/{layer}/tiles/{tms}/{z}/{y}/{x}"
ONEMAP_TILE = "/tiles/onemap/{tms}/{z}/{y}/{x}"
TILE_PATHS = tuple(compile_path(template)[0] for template in (LAYER_TILE, ONEMAP_TILE))  # as the routes match


def tile_path(path: str) -> dict[str, str] | None:
    """The path parameters of a tile URL (no `layer` for the one-map tile), or None for any other path."""
    for pattern in TILE_PATHS:
        match = pattern.match(path)
        if match is not None:
            return match.groupdict()
    return None


@dataclass(frozen=True)
class TileRequest:
    tile: TileAddress
    layers: tuple[LayerSpec, ...]
    properties: tuple[tuple[str, ...], ...]  # each layer's, in order
    moment: datetime | None = None
    filter: tuple[str, str, str | None] | None = None  # (text, filter-lang, filter-crs) as given, single layer only
    hidden: frozenset[str] = frozenset()  # private layers left out of a composite tile for its caller (twin.access)

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
    """A tile URL's request: `path` has its tms, z, y and x, and its layer unless it is the one-map tile;
    `query` its parameters (of a repeated one, the last)."""
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
    return TileRequest(tile, chosen, tuple(tuple(f.name for f in spec.fields) for spec in chosen), moment,
                       hidden=hidden)


# -- the routes' dependencies: each parameter documented, all of them checked by the parser above -------------

def _number(description: str):
    return Path(description=description, json_schema_extra={"type": "integer"})


TMS = Path(description="Tile matrix set id, e.g. WebMercatorQuad")
Z, Y, X = _number("Tile matrix (zoom level)"), _number("Tile row"), _number("Tile column")
AS_OF = Query(None, description="Read the layer as it was at this moment (RFC 3339; without an offset: China "
                                "Standard Time).")


def _given(**query: str | None) -> dict[str, str]:
    return {name.replace("_", "-") if name.startswith("filter_") else name: value
            for name, value in query.items() if value is not None}


async def layer_tile_request(
        layer: str, tms: str = TMS, z: str = Z, y: str = Y, x: str = X,
        properties: str | None = Query(None, description="Comma-separated fields to return; empty for none."),
        as_of: str | None = AS_OF,
        filter: str | None = Query(None, description="A CQL2 filter (see /collections/{layer}/queryables)."),
        filter_lang: str = Query("cql2-text", alias="filter-lang", json_schema_extra={"enum": list(LANGS)}),
        filter_crs: str | None = Query(None, alias="filter-crs", description="CRS of geometry literals; CRS84 "
                                                                              "by default.")) -> TileRequest:
    return tile_request({"layer": layer, "tms": tms, "z": z, "y": y, "x": x},
                        _given(properties=properties, as_of=as_of, filter=filter, filter_lang=filter_lang,
                               filter_crs=filter_crs))


async def onemap_tile_request(
        request: Request, tms: str = TMS, z: str = Z, y: str = Y, x: str = X,
        layers: str | None = Query(None, description="Comma-separated layers (default: every vector layer "
                                                     "visible at this zoom)"),
        as_of: str | None = AS_OF) -> TileRequest:
    hidden = await hidden_layers(request)  # the caller's key is checked before anything else
    return tile_request({"tms": tms, "z": z, "y": y, "x": x}, _given(layers=layers, as_of=as_of), hidden)
