"""Tile request parameters: the tile and its layers (properties, as_of and filter come from layers.params)."""

from datetime import datetime, timedelta, timezone

from layers.catalog import LayerSpec, catalog, get_layer
from twin.errors import ApiError

PAST_MARGIN = timedelta(minutes=5)  # a moment older than this has all its writes committed


def tile_numbers(path: dict[str, str]) -> tuple[int, int, int]:
    """(z, y, x) of a tile path (tiles.request): integers (tiles.tms.address says which exist), else a 400 naming
    the one at fault."""
    numbers = []
    for name in ("z", "y", "x"):
        text = path[name]
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()):
            raise ApiError(400, "invalid_parameter", f"The tile's {name} must be a whole number, not '{text[:20]}'.",
                           where=f"path.{name}")
        if len(digits) > 18:
            raise ApiError(400, "tile_out_of_range", f"Tile {name} has {len(digits)} digits: no tile matrix set is "
                           "that large.", where=f"path.{name}")
        numbers.append(int(text))
    return tuple(numbers)


async def vector_layer(layer: str) -> LayerSpec:
    return vector_spec(layer)


def vector_spec(layer: str) -> LayerSpec:
    spec = get_layer(layer)
    if spec is None or spec.kind != "vector":
        known = ", ".join(s.id for s in catalog().values() if s.kind == "vector")
        raise ApiError(404, "unknown_layer", f"No vector layer '{layer[:80]}'. Vector layers: {known}.",
                       where="path.layer")
    return spec


def is_past(moment: datetime | None) -> bool:
    """A moment whose tiles can never change (every write before it has committed)."""
    return moment is not None and moment < datetime.now(timezone.utc) - PAST_MARGIN


def onemap_layers(layers: str | None, z: int) -> list[LayerSpec]:
    """The composite's layers: those asked for, else every vector layer; only those visible at zoom z."""
    if layers is None or not layers.strip():
        chosen = [s for s in catalog().values() if s.kind == "vector"]
    else:
        chosen = []
        for name in dict.fromkeys(n.strip() for n in layers.split(",") if n.strip()):
            spec = get_layer(name)
            if spec is None or spec.kind != "vector":
                raise ApiError(400, "unknown_layer", f"'{name[:80]}' is not a vector layer of the catalog.",
                               where="query.layers")
            chosen.append(spec)
    return [s for s in chosen if s.minzoom <= z <= s.maxzoom]
