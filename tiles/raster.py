"""Raster tiles: titiler.core's TilerFactory mounted at /raster/{layer}.

The COG behind a layer comes from the catalog table `twin.raster_source` (written by the imagery
ETL job), never from the client. Only files whose header is TIFF's are handed to GDAL, so the
GTiff driver opens them, never the VRT driver (a VRT is XML that can point GDAL at any file or
URL). GDAL_SKIP=VRT is not an option: rio-tiler reprojects tiles through in-memory warped VRTs.
Sidecar files are not looked for (GDAL_DISABLE_READDIR_ON_OPEN): a COG carries its overviews.

Before titiler reads anything, its parameters are checked by dependency classes (tiles/raster_params.py)
that refuse what would fail deep inside rio-tiler or exhaust memory: bands the COG does not have (in `bidx`
or `expression`), image sizes beyond MAX_PIXELS a side, zoom levels outside the grids', `algorithm_params`
that are not a JSON object and posted geometries with impossible coordinates.
"""

from functools import cache

from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import JSONResponse
from rio_tiler.errors import (InvalidBandName, InvalidColorFormat, InvalidColorMapName, InvalidExpression,
                              InvalidFormat, MissingBands, PointOutsideBounds, RioTilerError, TileOutsideBounds)
from sqlalchemy import Column, MetaData, Table, Text, select
from titiler.core.factory import TilerFactory

from layers.catalog import catalog, get_layer
from tiles.raster_params import (GDAL_ENV, Histogram, ImageSize, PreviewSize, TileOptions, TileSize, Zooms,
                                 checked_geometry, layer_params, post_process)
from tiles.tms import GRIDS
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


def install(app: FastAPI) -> None:
    """Mount the raster tiler and answer rio-tiler's errors as JSON with a reason."""
    factory = TilerFactory(router_prefix=PREFIX, path_dependency=cog_path, supported_tms=GRIDS,
                           environment_dependency=lambda: GDAL_ENV, layer_dependency=layer_params(cog_path),
                           tile_dependency=TileOptions, img_preview_dependency=PreviewSize,
                           img_part_dependency=ImageSize, histogram_dependency=Histogram,
                           process_dependency=post_process,
                           add_viewer=False, add_preview=False, add_part=False)
    # titiler declares tilesize, minzoom and maxzoom inside its endpoints, not in a dependency the factory takes:
    # bounded on the routes that have them. An example path per route (a tile's also matches the tile route
    # without a format suffix, whose {y} takes "0.png").
    def on(*paths: str, method: str = "GET") -> list[dict]:
        return [{"path": path, "method": method} for path in paths]

    tiles, tileset = "/tiles/WebMercatorQuad/0/0/0.png", "/tiles/WebMercatorQuad"
    tilejson = "/WebMercatorQuad/tilejson.json"
    factory.add_route_dependencies(scopes=on(tiles, tilejson), dependencies=[Depends(TileSize)])
    factory.add_route_dependencies(scopes=on(tileset, tilejson), dependencies=[Depends(Zooms)])
    factory.add_route_dependencies(scopes=on("/statistics", method="POST"), dependencies=[Depends(checked_geometry)])
    app.include_router(factory.router, prefix=PREFIX, tags=["raster"])

    def handler(status: int, code: str):
        async def respond(request: Request, exc: Exception):
            return JSONResponse({"code": code, "description": str(exc)}, status_code=status)
        return respond

    for error, (status, code) in CLIENT_ERRORS.items():
        app.add_exception_handler(error, handler(status, code))
