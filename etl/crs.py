"""Coordinate systems on the way in: everything becomes CGCS2000 lon/lat (EPSG:4490).

Real CRSs go through pyproj (always x = easting/longitude, whatever the CRS's axis
order: EPSG:4549 defines northing first, but files put eastings in x); the offset
systems GCJ02 and BD09 through our own `etl.offset`. Features that land outside the
district get a reason saying what their raw coordinates look like instead (swapped
axes, metres read as degrees, a Gauss-Krüger zone prefix) and which --crs fixes it.
GCJ-02 data declared as WGS84 lands a few hundred metres off, inside the district:
that cannot be told by position and is not diagnosed.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyproj
import shapely

from etl.offset import TO_WGS84, transform_geometries
from layers.catalog import SRID
from layers.validate import PLAUSIBLE_EXTENT

OFFSET_SYSTEMS = set(TO_WGS84)
STORAGE = pyproj.CRS.from_epsg(SRID)
# what district data commonly arrives in, tried in this order when a feature lands far away
CANDIDATES = [pyproj.CRS.from_epsg(code) for code in (4490, 4549, 4528, 3857)]


class CrsError(ValueError):
    """An unknown or unusable coordinate system; the message says which and what is accepted."""


@dataclass(frozen=True)
class Source:
    """The coordinate system a file's coordinates are read in, and why that one."""
    crs: pyproj.CRS | str  # a pyproj CRS, or the name of an offset system
    origin: str

    @property
    def label(self) -> str:
        if isinstance(self.crs, str):
            return self.crs
        return f"{_code(self.crs)} ({self.crs.name})"

    @property
    def geographic(self) -> bool:
        return isinstance(self.crs, str) or self.crs.is_geographic


def _code(crs: pyproj.CRS) -> str:
    epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg}" if epsg else crs.name


def parse_crs(text: str) -> pyproj.CRS | str:
    """A pyproj CRS, or the name of an offset system ('GCJ02', 'BD09')."""
    name = text.strip().upper().replace("-", "").replace("_", "")
    if name in OFFSET_SYSTEMS:
        return name
    try:
        crs = pyproj.CRS.from_user_input(text.strip())
    except pyproj.exceptions.CRSError as e:
        raise CrsError(f"unknown coordinate system {text!r}: give an EPSG code (EPSG:4326, EPSG:4490, "
                       f"EPSG:4549, EPSG:4528, EPSG:3857 …), or GCJ02 or BD09") from e
    if not (crs.is_geographic or crs.is_projected):
        raise CrsError(f"{text!r} is not a horizontal coordinate system; give a geographic or projected one")
    return crs


def source_of(declared: str | None, given: str | None = None) -> Source:
    """`given` (by the user) wins over `declared` (by the file); with neither, CGCS2000 lon/lat is assumed."""
    if given:
        return Source(parse_crs(given), "given with --crs")
    if declared:
        return Source(pyproj.CRS.from_user_input(declared), "declared by the file")
    return Source(STORAGE, "assumed: the file declares no CRS")


@lru_cache(maxsize=32)
def _transformer(source: pyproj.CRS) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(source, STORAGE, always_xy=True)


def _xy_to_storage(source: pyproj.CRS | str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(source, str):
        return TO_WGS84[source](x, y)
    if source.equals(STORAGE, ignore_axis_order=True):
        return x, y
    return _transformer(source).transform(x, y, errcheck=False)


def convert(geometry: pd.Series, source: Source) -> pd.Series:
    """Geometries converted from `source` to the storage CRS."""
    values = geometry.to_numpy(dtype=object)
    present = ~shapely.is_missing(values)
    out = values.copy()
    if isinstance(source.crs, str):
        out[present] = transform_geometries(values[present], TO_WGS84[source.crs])
    elif not source.crs.equals(STORAGE, ignore_axis_order=True):
        def project(xy: np.ndarray) -> np.ndarray:
            return np.column_stack(_xy_to_storage(source.crs, xy[:, 0], xy[:, 1]))

        out[present] = shapely.transform(values[present], project)
    return pd.Series(out, index=geometry.index, dtype=object)


def to_storage(geometry: pd.Series, declared: str | None, given: str | None = None) -> pd.Series:
    return convert(geometry, source_of(declared, given))


def _inside(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = PLAUSIBLE_EXTENT
    with np.errstate(invalid="ignore"):
        return np.isfinite(lon) & np.isfinite(lat) & (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)


def misplaced(raw: pd.Series, stored: pd.Series, source: Source) -> dict:
    """Row label -> reason, for features whose converted geometry lands far outside the district."""
    values = stored.to_numpy(dtype=object)
    present = ~(shapely.is_missing(values) | shapely.is_empty(values))
    x0, y0, x1, y1 = shapely.bounds(values[present]).T
    ex0, ey0, ex1, ey1 = PLAUSIBLE_EXTENT
    with np.errstate(invalid="ignore"):  # the same test as validation's, plus coordinates pyproj could not convert
        away = ~np.isfinite([x0, y0, x1, y1]).all(axis=0) | (x1 < ex0) | (x0 > ex1) | (y1 < ey0) | (y0 > ey1)
    far = np.flatnonzero(present)[away]
    if not len(far):
        return {}
    raw_bounds = shapely.bounds(raw.to_numpy(dtype=object)[far])
    x = (raw_bounds[:, 0] + raw_bounds[:, 2]) / 2
    y = (raw_bounds[:, 1] + raw_bounds[:, 3]) / 2
    guesses: list = [None] * len(far)
    tries = [(source.crs, False), (source.crs, True)] + [(c, swap) for swap in (False, True) for c in CANDIDATES]
    for crs, swap in tries:
        open_rows = np.array([g is None for g in guesses])
        if not open_rows.any():
            break
        if isinstance(crs, str):  # an offset is a few hundred metres: test the raw lon/lat as they are
            lon, lat = (y, x) if swap else (x, y)
        else:
            lon, lat = _xy_to_storage(crs, *((y, x) if swap else (x, y)))
        for i in np.flatnonzero(open_rows & _inside(np.asarray(lon), np.asarray(lat))):
            guesses[i] = (crs, swap)
    labels = stored.index[far]
    return {label: _reason(x[i], y[i], source, guesses[i]) for i, label in enumerate(labels)}


def _number(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 1000 else f"{v:.6f}"


def _reason(x: float, y: float, source: Source, guess) -> str:
    at = f"({_number(x)}, {_number(y)})"
    x0, y0, x1, y1 = PLAUSIBLE_EXTENT
    lands = f"{at} read as {source.label} ({source.origin}) lands outside the district's area ({x0}–{x1}E, {y0}–{y1}N)"
    if guess is None:
        return (f"geometry {lands}, and fits none of EPSG:4490/4326, EPSG:4549, EPSG:4528, EPSG:3857 either; "
                "check the coordinates and the coordinate system (--crs)")
    crs, swapped = guess
    if isinstance(crs, str) or crs.equals(source.crs) or (source.geographic and crs.is_geographic):
        return (f"x and y look swapped: {lands}, but ({_number(y)}, {_number(x)}) lands inside; "
                "put longitude/easting in x (经度) and latitude/northing in y (纬度)")
    code = _code(crs)
    source_code = None if isinstance(source.crs, str) else _code(source.crs)
    if source.geographic and crs.is_projected:
        what = f"these look like projected metres read as degrees ({code}, {crs.name})"
    elif not source.geographic and crs.is_geographic:
        what = "these look like degrees (longitude/latitude) read as projected metres"
        code = "EPSG:4490 (or EPSG:4326, GCJ02, BD09: whichever the longitudes/latitudes are in)"
    elif {source_code, code} == {"EPSG:4549", "EPSG:4528"}:
        what = ("the eastings carry the zone prefix 40: looks like EPSG:4528 (zone prefix 40), not EPSG:4549"
                if code == "EPSG:4528" else
                "the eastings have no zone prefix: looks like EPSG:4549 (CM 120E, no prefix), not EPSG:4528")
    else:
        what = f"these look like {code} ({crs.name}) coordinates"
    fix = f"give the file's CRS: --crs {code.split(' ')[0]} (HTTP: crs={code.split(' ')[0]})"
    if swapped:
        fix += ", and swap x and y (they look swapped too)"
    return f"{what}: {lands}; {fix}"
