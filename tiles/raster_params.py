"""The raster tiler's parameters: titiler's dependency dataclasses, with this server's limits on their fields.

Every numeric limit is a `Query(ge=…, le=…)`, so OpenAPI documents it and FastAPI checks it. The house answer to a
value out of range names that one parameter (`where`) and its range; FastAPI's validation answer lists every
error instead, so a `BeforeValidator` checks the range first and raises ApiError, which pydantic lets through
(it converts only ValueError and AssertionError into validation errors).

What needs the COG itself (the band count for `bidx` and `expression`) is checked by `LayerParams`, the posted
geometry by `checked_geometry`, a dependency of the one route that takes a geometry.
"""

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Literal

import rasterio
from fastapi import Depends, Query, Request
from pydantic import BeforeValidator
from rasterio.crs import CRS
from rio_tiler.errors import RioTilerError
from rio_tiler.expression import parse_expression
from titiler.core.algorithm import BaseAlgorithm, algorithms
from titiler.core.dependencies import (BidxExprParams, CoordCRSParams, DefaultDependency, HistogramParams,
                                       TileParams)
from titiler.core.validation import separated_parseable_floats_regex

from tiles.tms import GRID
from twin.errors import ApiError

GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
MAX_PIXELS = 2048  # a side of any image asked for: 2048² float32 bands stay within tens of MB
MAX_BINS = 10_000
MAX_PROJECTED = 1e8  # metres: beyond any projected CRS's range
MAX_ZOOM = max(grid.maxzoom for grid in GRID.values())


def _refuse(name: str, reason: str, given) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name} must {reason}, not {str(given)[:40]}.", where=f"query.{name}")


def _in_range(name: str, lowest: float, highest: float):
    def check(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value  # not a number: the type's own validation answers
        if not lowest <= number <= highest:  # NaN too
            raise _refuse(name, f"lie between {lowest:g} and {highest:g}", value)
        return value
    return check


def bounded(kind, name: str, lowest: float, highest: float, description: str, **query):
    """`kind` limited to lowest…highest; `query` replaces the limits FastAPI checks (titiler's own `gt=0`)."""
    limits = query or {"ge": lowest, "le": highest}
    # the validator after the Query: pydantic's JSON schema keeps the limits then (before it, they are lost)
    return Annotated[kind, Query(description=description, **limits), BeforeValidator(_in_range(name, lowest, highest))]


@dataclass
class ImageSize(DefaultDependency):
    """titiler's PartFeatureParams within MAX_PIXELS. Declared anew rather than subclassed because FastAPI checks
    parameters in declaration order and the first one out of range is named: width, height, then max_size."""

    width: bounded(int | None, "width", 1, MAX_PIXELS, "Force output image width.") = None
    height: bounded(int | None, "height", 1, MAX_PIXELS, "Force output image height.") = None
    max_size: bounded(int | None, "max_size", 1, MAX_PIXELS, "Maximum image size to read onto.") = None

    def __post_init__(self):
        if self.width or self.height:
            self.max_size = None


@dataclass
class PreviewSize(ImageSize):
    """titiler's PreviewParams within MAX_PIXELS: the whole image read onto 1024 pixels unless sized."""

    max_size: bounded(int | None, "max_size", 1, MAX_PIXELS, "Maximum image size to read onto.") = 1024


@dataclass
class TileOptions(TileParams):
    buffer: bounded(float | None, "buffer", 0, 256, "Buffer on each side of the tile, a multiple of 0.5; the "
                    "output is `tilesize + 2 * buffer` pixels a side.", gt=0, le=256) = None
    padding: bounded(int | None, "padding", 0, 256, "Padding applied to each tile edge against resampling "
                     "artefacts. Defaults to `0`.", gt=0, le=256) = None


@dataclass
class TileSize(DefaultDependency):
    """titiler declares `tilesize` inside its tile and tilejson endpoints; this bounds it on those routes."""

    tilesize: bounded(int | None, "tilesize", 1, MAX_PIXELS, "Tilesize in pixels (256 for a tile, 512 "
                                  "in a tilejson's tile URLs by default).") = None


@dataclass
class Zooms(DefaultDependency):
    """titiler declares `minzoom` and `maxzoom` inside its tileset and tilejson endpoints; this bounds them."""

    minzoom: bounded(int | None, "minzoom", 0, MAX_ZOOM, "Overwrite default minzoom.") = None
    maxzoom: bounded(int | None, "maxzoom", 0, MAX_ZOOM, "Overwrite default maxzoom.") = None


def _edges(name: str, pairs: bool):
    """numpy's histogram wants rising bin edges and a range low,high (it raises otherwise: a 500)."""
    count = _in_range(name, 1, MAX_BINS)

    def check(value):
        if not isinstance(value, str) or "," not in value:
            return value if pairs else count(value)
        try:
            values = [float(v) for v in value.split(",")]
        except ValueError:
            return value  # the pattern answers
        rising = all(a < b for a, b in zip(values, values[1:]))
        if not rising or len(values) > MAX_BINS or (pairs and len(values) != 2):
            raise _refuse(name, "be rising values (a range: low,high)", value)
        return value
    return BeforeValidator(check)


@dataclass
class Histogram(HistogramParams):
    bins: Annotated[str | None, Query(
        alias="histogram_bins", pattern=r"^\d+(,\d+)*$", description=f"The number of equal-width bins (1 to "
        f"{MAX_BINS}, 10 by default), or rising bin edges, comma-delimited (numpy.histogram's `bins`)."),
        _edges("histogram_bins", pairs=False)] = None
    range: Annotated[str | None, Query(
        alias="histogram_range", pattern=separated_parseable_floats_regex(count=2),
        description="The range of the bins, `low,high` (numpy.histogram's `range`)."),
        _edges("histogram_range", pairs=True)] = None


def _json_object(value):
    try:
        params = json.loads(value) if value is not None else {}
    except (TypeError, ValueError):
        params = None
    if not isinstance(params, dict):
        raise ApiError(400, "invalid_parameter", "algorithm_params must be a JSON object, e.g. {\"azimuth\": 45}.",
                       where="query.algorithm_params")
    return value


_titiler_post_process = algorithms.dependency


def post_process(
    algorithm: Annotated[Literal[tuple(algorithms.list())] | None, Query(description="Algorithm name")] = None,
    algorithm_params: Annotated[str | None, Query(
        description="The algorithm's parameters: a JSON object, e.g. {\"azimuth\": 45}."),
        BeforeValidator(_json_object)] = None,
) -> BaseAlgorithm | None:
    """titiler's algorithm dependency, its parameters a JSON object (`null` would reach `Algorithm(**None)`)."""
    return _titiler_post_process(algorithm, algorithm_params)


@cache
def band_count(path: str) -> int:
    """Registered COGs are immutable (named by their hash), so the answer can be kept."""
    with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
        return src.count


def layer_params(cog_path):
    """`LayerParams` for the COG that `cog_path` (the tiler's path dependency) finds."""

    def cog_bands(path: str = Depends(cog_path)) -> int:
        return band_count(path)

    @dataclass
    class LayerParams(BidxExprParams):
        """titiler's bidx and expression, naming bands the COG has (rio-tiler fails deep inside otherwise)."""

        bands: Annotated[int, Depends(cog_bands)] = field(kw_only=True)

        def __post_init__(self):
            asked = [("bidx", band) for band in self.indexes or []]
            if self.expression:
                try:
                    asked += [("expression", band) for band in parse_expression(self.expression)]
                except (ValueError, RioTilerError) as e:
                    raise ApiError(400, "invalid_parameter", f"expression: {e}", where="query.expression") from e
            for where, band in asked:
                if not 1 <= int(band) <= self.bands:
                    count = self.bands
                    bands = "band 1 (b1)" if count == 1 else f"bands 1 to {count} (b1 … b{count})"
                    raise ApiError(400, "invalid_parameter", f"{where} names band {band}; this layer has {bands}.",
                                   where=f"query.{where}")

        def as_dict(self, exclude_none: bool = True) -> dict:
            """The reader's options: the band count was only for checking them."""
            return {k: v for k, v in super().as_dict(exclude_none).items() if k != "bands"}

    return LayerParams


def _positions(value):
    """Every position (a list of numbers) under a `coordinates` member of a GeoJSON body."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _positions_in(item) if key == "coordinates" else _positions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _positions(item)


def _positions_in(value):
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _positions_in(item)


async def checked_geometry(request: Request, coord_crs: CRS | None = Depends(CoordCRSParams)) -> None:
    """A posted geometry's coordinates must be plausible (rasterio overflows on absurd ones): lon/lat unless
    `coord_crs` is given, then within any projected CRS's range. Read from the raw body because the
    body's model refuses a short position with a list of errors rather than this reason."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        return  # FastAPI's own validation answers
    x_max, y_max = (MAX_PROJECTED, MAX_PROJECTED) if coord_crs is not None else (180, 90)
    for position in _positions(body):
        if len(position) < 2 or not (abs(position[0]) <= x_max and abs(position[1]) <= y_max):
            raise ApiError(400, "invalid_geometry", f"The position {position[:3]} is not a coordinate pair within "
                           f"±{x_max:g}, ±{y_max:g} (lon/lat unless coord_crs is given).", where="body.geometry")
