"""Coordinate systems on the way in: everything becomes CGCS2000 lon/lat (EPSG:4490).

Real CRSs go through pyproj (always x = easting/longitude, whatever the CRS's axis
order); the offset systems GCJ02 and BD09 through our own `etl.offset`.
"""

import numpy as np
import pandas as pd
import pyproj
import shapely

from etl.offset import TO_WGS84, transform_geometries
from layers.catalog import SRID

OFFSET_SYSTEMS = set(TO_WGS84)
STORAGE = pyproj.CRS.from_epsg(SRID)


class CrsError(ValueError):
    """An unknown or unusable coordinate system; the message says which and what is accepted."""


def parse_crs(text: str) -> pyproj.CRS | str:
    """A pyproj CRS, or the name of an offset system ('GCJ02', 'BD09')."""
    name = text.strip().upper().replace("-", "").replace("_", "")
    if name in OFFSET_SYSTEMS:
        return name
    try:
        return pyproj.CRS.from_user_input(text.strip())
    except pyproj.exceptions.CRSError as e:
        raise CrsError(f"unknown coordinate system {text!r}: give an EPSG code (EPSG:4326, EPSG:4490, "
                       f"EPSG:4549, EPSG:3857 …), or GCJ02 or BD09") from e


def to_storage(geometry: pd.Series, declared: str | None, given: str | None = None) -> pd.Series:
    """Geometries converted to the storage CRS. `given` (from the user) wins over `declared` (from the file);
    with neither, lon/lat in WGS84/CGCS2000 is assumed."""
    source = parse_crs(given) if given else (pyproj.CRS.from_user_input(declared) if declared else STORAGE)
    values = geometry.to_numpy(dtype=object)
    present = ~shapely.is_missing(values)
    out = values.copy()
    if isinstance(source, str):
        out[present] = transform_geometries(values[present], TO_WGS84[source])
    elif not source.equals(STORAGE, ignore_axis_order=True):
        transformer = pyproj.Transformer.from_crs(source, STORAGE, always_xy=True)

        def project(xy: np.ndarray) -> np.ndarray:
            return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

        out[present] = shapely.transform(values[present], project)
    return pd.Series(out, index=geometry.index, dtype=object)
