"""The local metric frame, seeded random streams and geometry helpers shared by the generators.

Everything is generated in metres on an equirectangular frame centred on the district and
mapped back to CGCS2000 longitude/latitude on output. Over 25 km its scale error is far below
a metre, and being affine it keeps straight segments straight: a point interpolated on a line in
metres is still on that line in degrees, and shared vertices stay bit-identical.
"""

import zlib

import numpy as np
import shapely

LON0, LAT0 = 120.43, 31.50
_PHI = np.radians(LAT0)
M_PER_DEG_LAT = 111132.954 - 559.822 * np.cos(2 * _PHI) + 1.175 * np.cos(4 * _PHI)
M_PER_DEG_LON = 111412.84 * np.cos(_PHI) - 93.5 * np.cos(3 * _PHI) + 0.118 * np.cos(5 * _PHI)


def lonlat_to_xy(lon, lat):
    return (np.asarray(lon) - LON0) * M_PER_DEG_LON, (np.asarray(lat) - LAT0) * M_PER_DEG_LAT


def xy_to_lonlat(x, y):
    return LON0 + np.asarray(x) / M_PER_DEG_LON, LAT0 + np.asarray(y) / M_PER_DEG_LAT


def to_metres(geoms):
    return shapely.transform(geoms, lambda c: np.column_stack(lonlat_to_xy(c[:, 0], c[:, 1])))


def to_degrees(geoms):
    return shapely.transform(geoms, lambda c: np.column_stack(xy_to_lonlat(c[:, 0], c[:, 1])))


def xy(lon, lat) -> np.ndarray:
    return np.array(lonlat_to_xy(lon, lat))


def rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    """An independent random stream per (seed, layer, index), so layers do not shift each other."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), *index])


class SmoothField:
    """A smooth random 2-D displacement: a few long plane waves per axis."""

    def __init__(self, rng: np.random.Generator, amplitude: float, wavelength: float, waves: int = 3):
        angles = rng.uniform(0, 2 * np.pi, (2, waves))
        k = 2 * np.pi / (wavelength * rng.uniform(0.7, 1.4, (2, waves)))
        self._kx, self._ky = k * np.cos(angles), k * np.sin(angles)
        self._phase = rng.uniform(0, 2 * np.pi, (2, waves))
        self._amp = amplitude / np.sqrt(waves / 2)

    def __call__(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        out = np.zeros((2, *x.shape))
        for axis in (0, 1):
            for kx, ky, phase in zip(self._kx[axis], self._ky[axis], self._phase[axis]):
                out[axis] += np.sin(kx * x + ky * y + phase)
        return self._amp * out[0], self._amp * out[1]


def chaikin(points: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Round the corners of a polyline, keeping its two end points."""
    for _ in range(rounds):
        a, b = points[:-1], points[1:]
        inner = np.empty((2 * len(a), 2))
        inner[0::2], inner[1::2] = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        points = np.vstack([points[:1], inner[1:-1], points[-1:]])
    return points


def densify(points: np.ndarray, step: float) -> np.ndarray:
    line = shapely.LineString(points)
    n = max(int(np.ceil(line.length / step)), 1) + 1
    return shapely.get_coordinates(shapely.line_interpolate_point(line, np.linspace(0, line.length, n)))


def meander(points, rng: np.random.Generator, amplitude: float, wavelength: float, step: float = 40.0) -> np.ndarray:
    """A natural-looking polyline through `points`: corners rounded, then displaced sideways by smooth
    noise that fades out towards both ends, so the end points stay exactly where they were."""
    points = np.asarray(points, dtype=float)
    xy_ = densify(chaikin(points), step)
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy_, axis=0).T))])
    tangent = np.gradient(xy_, axis=0)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]]) / np.hypot(*tangent.T)[:, None]
    waves = [(rng.uniform(0.6, 1.5) * wavelength, rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    offset = sum(np.sin(2 * np.pi * along / lam + ph) for lam, ph in waves) * amplitude / np.sqrt(1.5)
    fade = np.clip(np.minimum(along, along[-1] - along) / (0.5 * wavelength), 0, 1)
    xy_ = xy_ + normal * (offset * fade)[:, None]
    xy_[0], xy_[-1] = points[0], points[-1]
    return xy_


def polygonal(geom) -> shapely.MultiPolygon:
    """The polygon parts of an overlay result (dropping the points/lines GEOS may add), as a MultiPolygon."""
    parts = shapely.get_parts(shapely.get_parts(geom))
    return shapely.MultiPolygon([p for p in parts if p.geom_type == "Polygon" and p.area > 1.0])


def linear(geom, min_length: float = 0.0) -> shapely.MultiLineString:
    parts = shapely.get_parts(shapely.get_parts(geom))
    return shapely.MultiLineString([p for p in parts if p.geom_type == "LineString" and p.length > min_length])
