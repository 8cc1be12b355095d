"""Raster tiles: titiler.core's TilerFactory mounted at /raster/{layer}.

The COG behind a layer comes from the catalog table `twin.raster_source` (written by the imagery
ETL job), never from the client. Only files whose header is TIFF's are handed to GDAL, so the
GTiff driver opens them, never the VRT driver (a VRT is XML that can point GDAL at any file or
URL). GDAL_SKIP=VRT is not an option: rio-tiler reprojects tiles through in-memory warped VRTs.
Sidecar files are not looked for (GDAL_DISABLE_READDIR_ON_OPEN): a COG carries its overviews.

Before titiler reads anything, `checked_request` refuses what would fail deep inside rio-tiler or
exhaust memory: bands the COG does not have (in `bidx` or `expression`), image sizes beyond
MAX_PIXELS a side, zoom levels outside the grids' and `algorithm_params` that are not a JSON object.
"""

import json
from functools import cache

import rasterio
from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import JSONResponse
from rio_tiler.errors import (InvalidBandName, InvalidColorFormat, InvalidColorMapName, InvalidExpression,
                              InvalidFormat, MissingBands, PointOutsideBounds, RioTilerError, TileOutsideBounds)
from rio_tiler.expression import parse_expression
from sqlalchemy import Column, MetaData, Table, Text, select
from titiler.core.factory import TilerFactory

from layers.catalog import catalog, get_layer
from tiles.tms import GRID, GRIDS
from twin.errors import ApiError

PREFIX = "/raster/{layer}"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
raster_source = Table("raster_source", MetaData(), Column("layer", Text, primary_key=True), Column("path", Text),
                      schema="twin")
# rio-tiler's errors, as the client's mistake they are: status and code
CLIENT_ERRORS = {
    TileOutsideBounds: (404, "tile_outside_data"),
    PointOutsideBounds: (404, "point_outside_data"),
    InvalidColorFormat: (400, "invalid_parameter"),
    InvalidColorMapName: (400, "invalid_parameter"),
    InvalidExpression: (400, "invalid_parameter"),
    InvalidFormat: (400, "invalid_parameter"),
    InvalidBandName: (400, "invalid_parameter"),
    MissingBands: (400, "invalid_parameter"),
    # rio-tiler's own complaints about what it was asked (e.g. "Invalid geometry" for a feature without one);
    # a fault of the file comes from rasterio instead
    RioTilerError: (400, "invalid_parameter"),
}
GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
MAX_PIXELS = 2048  # a side of any image asked for: 2048² float32 bands stay within tens of MB
MAX_PROJECTED = 1e8  # metres: beyond any projected CRS's range
MAX_ZOOM = max(grid.maxzoom for grid in GRID.values())
# query parameters that size the work: (lowest, highest)
BOUNDS = {"tilesize": (1, MAX_PIXELS), "width": (1, MAX_PIXELS), "height": (1, MAX_PIXELS),
          "max_size": (1, MAX_PIXELS), "buffer": (0, 256), "padding": (0, 256),
          "minzoom": (0, MAX_ZOOM), "maxzoom": (0, MAX_ZOOM), "histogram_bins": (1, 10_000)}


@cache
def is_tiff(path: str) -> bool:
    """Registered COGs are immutable (named by their hash), so the answer can be kept."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False


async def cog_path(request: Request, layer: str = PathParam(description="A raster layer of the catalog")) -> str:
    spec = get_layer(layer)
    if spec is None or spec.kind != "raster":
        known = ", ".join(s.id for s in catalog().values() if s.kind == "raster")
        raise ApiError(404, "unknown_layer", f"No raster layer '{layer[:80]}'. Raster layers: {known}.",
                       where="path.layer")
    async with request.app.state.read_engine.connect() as conn:
        path = (await conn.execute(select(raster_source.c.path).where(raster_source.c.layer == spec.id))).scalar()
    if path is None:
        raise ApiError(404, "raster_not_loaded", f"No data loaded for raster layer {spec.id} yet.", where="path.layer")
    if not is_tiff(path):
        raise ApiError(404, "raster_unavailable", f"The file of raster layer {spec.id} is missing or not a "
                       "GeoTIFF; reload the layer.", where="path.layer")
    return path


@cache
def band_count(path: str) -> int:
    with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
        return src.count


def _check_bounds(request: Request) -> None:
    for name, (lowest, highest) in BOUNDS.items():
        try:
            value = float(request.query_params[name])
        except (KeyError, ValueError):  # absent, or not a number: titiler's own validation answers
            continue
        if not lowest <= value <= highest:
            raise ApiError(400, "invalid_parameter", f"{name} must lie between {lowest} and {highest}, not "
                           f"{request.query_params[name][:40]}.", where=f"query.{name}")


def _check_bands(request: Request, count: int) -> None:
    asked = [("bidx", b) for b in request.query_params.getlist("bidx") if b.lstrip("-").isdigit()]
    expression = request.query_params.get("expression")
    if expression:
        try:
            asked += [("expression", str(b)) for b in parse_expression(expression)]
        except (ValueError, RioTilerError) as e:
            raise ApiError(400, "invalid_parameter", f"expression: {e}", where="query.expression") from e
    for where, band in asked:
        if not 1 <= int(band) <= count:
            bands = "band 1 (b1)" if count == 1 else f"bands 1 to {count} (b1 … b{count})"
            raise ApiError(400, "invalid_parameter", f"{where} names band {band}; this layer has {bands}.",
                           where=f"query.{where}")


def _check_histogram(request: Request) -> None:
    """Bin edges must rise and a range is low,high (numpy raises otherwise: a 500)."""
    for name in ("histogram_bins", "histogram_range"):
        given = request.query_params.get(name, "")
        try:
            values = [float(v) for v in given.split(",")] if "," in given else []
        except ValueError:
            continue  # titiler's own validation answers
        rising = all(a < b for a, b in zip(values, values[1:]))
        if values and (not rising or len(values) > 10_000 or (name == "histogram_range" and len(values) != 2)):
            raise ApiError(400, "invalid_parameter", f"{name} must be rising values (a range: low,high), not "
                           f"{given[:40]}.", where=f"query.{name}")


def _check_algorithm_params(request: Request) -> None:
    given = request.query_params.get("algorithm_params")
    try:
        params = json.loads(given) if given is not None else {}
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise ApiError(400, "invalid_parameter", "algorithm_params must be a JSON object, e.g. {\"azimuth\": 45}.",
                       where="query.algorithm_params")


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


async def _check_geometry(request: Request) -> None:
    """A posted geometry's coordinates must be plausible (rasterio overflows on absurd ones): lon/lat
    unless `coord_crs` names another CRS, then within any projected CRS's range."""
    if request.method != "POST":
        return
    try:
        body = json.loads(await request.body())
    except ValueError:
        return  # FastAPI's own validation answers
    x_max, y_max = (MAX_PROJECTED, MAX_PROJECTED) if "coord_crs" in request.query_params else (180, 90)
    for position in _positions(body):
        if len(position) < 2 or not (abs(position[0]) <= x_max and abs(position[1]) <= y_max):
            raise ApiError(400, "invalid_geometry", f"The position {position[:3]} is not a coordinate pair within "
                           f"±{x_max:g}, ±{y_max:g} (lon/lat unless coord_crs is given).", where="body.geometry")


async def checked_request(request: Request, path: str = Depends(cog_path)) -> None:
    """Refuse sizes, zooms, bands, parameters and geometries that would exhaust memory or fail inside rio-tiler
    (see the module doc)."""
    _check_bounds(request)
    _check_histogram(request)
    _check_algorithm_params(request)
    _check_bands(request, band_count(path))
    await _check_geometry(request)


def install(app: FastAPI) -> None:
    """Mount the raster tiler and answer rio-tiler's errors as JSON with a reason."""
    factory = TilerFactory(router_prefix=PREFIX, path_dependency=cog_path, supported_tms=GRIDS,
                           environment_dependency=lambda: GDAL_ENV,
                           add_viewer=False, add_preview=False, add_part=False)
    app.include_router(factory.router, prefix=PREFIX, tags=["raster"], dependencies=[Depends(checked_request)])

    def handler(status: int, code: str):
        async def respond(request: Request, exc: Exception):
            return JSONResponse({"code": code, "description": str(exc)}, status_code=status)
        return respond

    for error, (status, code) in CLIENT_ERRORS.items():
        app.add_exception_handler(error, handler(status, code))
