"""Tile matrix sets (morecantile grids) and tile addresses: which tile a request names and where it lies.

Three grids are served: WebMercatorQuad (the web map's), WorldCRS84Quad, and CGCS2000Quad, the
same geographic quad on the national frame EPSG:4490 (2x1 tiles at zoom 0).
"""

import math
from dataclasses import dataclass
from functools import cached_property

import morecantile
from morecantile import Tile, TileMatrixSet
from morecantile.defaults import TileMatrixSets
from pyproj import CRS

from twin.errors import ApiError

CGCS2000_QUAD = TileMatrixSet.custom(
    [-180.0, -90.0, 180.0, 90.0], CRS.from_epsg(4490), matrix_scale=[2, 1], id="CGCS2000Quad",
    title="CGCS2000 geographic quad (EPSG:4490), 2x1 tiles at zoom 0", maxzoom=24)

# A plain mapping: morecantile's TileMatrixSets.get deep-copies the grid on every call.
GRID = {"WebMercatorQuad": morecantile.tms.get("WebMercatorQuad"),
        "WorldCRS84Quad": morecantile.tms.get("WorldCRS84Quad"),
        "CGCS2000Quad": CGCS2000_QUAD}
GRIDS = TileMatrixSets(GRID)  # for titiler's factories
# Each grid's tile matrices by zoom, and where each zoom's tile 0/0 begins (its upper left corner, as morecantile
# places it): `TileMatrixSet.matrix(z)`, which `xy_bounds` also calls, costs more than the rest of placing a
# tile (docs/benchmarks.md, Tiles). Every matrix served is a regular one from the top left.
MATRICES = {name: {int(m.id): m for m in grid.tileMatrices} for name, grid in GRID.items()}
assert all(m.cornerOfOrigin == "topLeft" and m.variableMatrixWidths is None
           for matrices in MATRICES.values() for m in matrices.values())
ORIGINS = {name: {z: grid.xy_bounds(Tile(0, 0, z))[::3] for z in MATRICES[name]} for name, grid in GRID.items()}
# The PostGIS SRID of each grid's CRS (CRS84 is lon/lat WGS84, which PostGIS orders as 4326 does).
SRIDS = {"WebMercatorQuad": 3857, "WorldCRS84Quad": 4326, "CGCS2000Quad": 4490}
EXTENT = 4096  # MVT units across a tile
BUFFER = 64  # MVT units drawn beyond each edge, so symbols and strokes are not cut at tile seams
EARTH_RADIUS = 6378137.0  # Web Mercator's sphere


def grid_or_404(tms: str) -> TileMatrixSet:
    if tms not in SRIDS:
        raise ApiError(404, "unknown_tile_matrix_set", f"No tile matrix set '{tms}'. Known: {', '.join(SRIDS)}.",
                       where="path.tms")
    return GRID[tms]


@dataclass(frozen=True)
class TileAddress:
    tms: str
    z: int
    x: int
    y: int

    @property
    def grid(self) -> TileMatrixSet:
        return GRID[self.tms]

    @property
    def srid(self) -> int:
        return SRIDS[self.tms]

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the grid's CRS, easting/longitude first as PostGIS wants: morecantile's
        `xy_bounds`, to the bit."""
        m, (left, top) = MATRICES[self.tms][self.z], ORIGINS[self.tms][self.z]
        x, y, cell = self.x, self.y, m.cellSize  # multiplied in morecantile's order, so the floats are the same
        return (left + x * cell * m.tileWidth, top - (y + 1) * cell * m.tileHeight,
                left + (x + 1) * cell * m.tileWidth, top - y * cell * m.tileHeight)

    @cached_property
    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        if self.srid != 3857:  # the geographic grids are in degrees already
            return self.bounds
        xmin, ymin, xmax, ymax = self.bounds
        return (*_lonlat(xmin, ymin), *_lonlat(xmax, ymax))


def _lonlat(x: float, y: float) -> tuple[float, float]:
    """Web Mercator metres to degrees on the sphere (pyproj's answer to 1e-9 degrees, without its per-call CRS hashing)."""
    return math.degrees(x / EARTH_RADIUS), math.degrees(math.atan(math.sinh(y / EARTH_RADIUS)))


def address(tms: str, z: int, x: int, y: int) -> TileAddress:
    """The tile named by a request, or a 404 (unknown grid) / 400 (no such tile in it)."""
    grid = grid_or_404(tms)
    matrix = MATRICES[tms].get(z)
    if matrix is None:
        raise ApiError(400, "tile_out_of_range", f"Zoom {z} is outside {tms}'s {grid.minzoom}..{grid.maxzoom}.",
                       where="path.z")
    for name, value, size in (("x", x, matrix.matrixWidth), ("y", y, matrix.matrixHeight)):
        if not 0 <= value < size:
            raise ApiError(400, "tile_out_of_range", f"Tile {name}={value} is outside 0..{size - 1} at zoom {z} "
                           f"of {tms}.", where=f"path.{name}")
    return TileAddress(tms, z, x, y)


def tile_range(tms: str, z: int, bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive: the tiles of zoom z that a lon/lat box touches, clamped to the grid."""
    grid = GRID[tms]
    west, south, east, north = grid.bbox
    left, bottom = max(bbox[0], west), max(bbox[1], south)
    right, top = min(bbox[2], east), min(bbox[3], north)
    matrix = grid.matrix(z)
    upper_left = grid.tile(left, top, z)
    lower_right = grid.tile(right, bottom, z)
    return (max(upper_left.x, 0), max(upper_left.y, 0),
            min(lower_right.x, matrix.matrixWidth - 1), min(lower_right.y, matrix.matrixHeight - 1))


def buffer_degrees(tms: str, z: int) -> float:
    """How far (in degrees, generously) a tile at zoom z reaches beyond its edges through the MVT buffer."""
    west, _, east, _ = GRID[tms].bounds(Tile(0, 0, z))
    return (east - west) * BUFFER / EXTENT
