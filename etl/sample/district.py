"""Streets (街道) as a partition of the district, and the management grids (网格) inside them.

No public source has Xinwu's street boundaries. We split the district among its six real
streets: many small Voronoi cells are each given to the nearest street seed after a smooth
random warp, so the borders wander like real ones while the streets still tile the district.
"""

import geopandas as gpd
import numpy as np
import shapely

from etl.sample.geo import SmoothField, polygonal, xy
from etl.sample.real import DISTRICT_CODE

# (code suffix, name, seed lon/lat placed roughly where the street really is)
STREETS = [
    ("001", "旺庄街道", (120.368, 31.548)),
    ("002", "硕放街道", (120.445, 31.470)),
    ("003", "江溪街道", (120.398, 31.508)),
    ("004", "新安街道", (120.372, 31.452)),
    ("005", "梅村街道", (120.478, 31.530)),
    ("006", "鸿山街道", (120.522, 31.480)),
]
CELL_SPACING = 400.0  # Voronoi cells: the resolution of the street borders
GRID_SIZE = 800.0  # management grid squares
MIN_GRID_SHARE = 0.3  # pieces smaller than this share of a square join a neighbour in the same street


def streets(district: shapely.Polygon, rng: np.random.Generator) -> gpd.GeoDataFrame:
    minx, miny, maxx, maxy = district.bounds
    gx, gy = np.meshgrid(np.arange(minx - 1000, maxx + 1000, CELL_SPACING),
                         np.arange(miny - 1000, maxy + 1000, CELL_SPACING))
    jitter = rng.uniform(-0.4, 0.4, (2, *gx.shape)) * CELL_SPACING
    sites = shapely.points((gx + jitter[0]).ravel(), (gy + jitter[1]).ravel())
    envelope = shapely.box(minx - 3000, miny - 3000, maxx + 3000, maxy + 3000)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(sites), extend_to=envelope, ordered=True))
    centre = shapely.get_coordinates(sites)
    dx, dy = SmoothField(rng, amplitude=900.0, wavelength=7000.0)(centre[:, 0], centre[:, 1])
    seeds = np.array([xy(*lonlat) for _, _, lonlat in STREETS])
    warped = centre + np.column_stack([dx, dy])
    label = np.argmin(np.hypot(*(warped[:, None, :] - seeds[None, :, :]).transpose(2, 0, 1)), axis=1)
    geoms = [polygonal(shapely.intersection(shapely.union_all(cells[label == i]), district)) for i in range(len(STREETS))]
    return gpd.GeoDataFrame({
        "code": [DISTRICT_CODE + suffix for suffix, _, _ in STREETS],
        "name": [name for _, name, _ in STREETS],
        "district_code": DISTRICT_CODE,
    }, geometry=geoms)


def grids(streets_: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    minx, miny, maxx, maxy = streets_.total_bounds
    gx, gy = np.meshgrid(np.arange(minx, maxx, GRID_SIZE), np.arange(miny, maxy, GRID_SIZE))
    squares = shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + GRID_SIZE, gy.ravel() + GRID_SIZE)
    street_idx, square_idx = shapely.STRtree(squares).query(streets_.geometry.values, predicate="intersects")
    pieces = np.array([polygonal(g) for g in shapely.intersection(streets_.geometry.values[street_idx], squares[square_idx])])
    keep = ~shapely.is_empty(pieces)
    pieces, street_idx = pieces[keep], street_idx[keep]
    pieces, street_idx = _merge_small(pieces, street_idx)

    centroid = shapely.get_coordinates(shapely.centroid(pieces))
    # Serials run north to south, west to east within each street.
    order = np.lexsort((centroid[:, 0], -np.round(centroid[:, 1] / GRID_SIZE), street_idx))
    codes, names = [], []
    serial = dict.fromkeys(range(len(streets_)), 0)
    for i in order:
        s = street_idx[i]
        serial[s] += 1
        codes.append(f"{streets_.code.iloc[s]}{serial[s]:03d}")
        names.append(f"{streets_.name.iloc[s]}第{serial[s]:03d}网格")
    return gpd.GeoDataFrame({
        "code": codes, "name": names, "street_code": streets_.code.values[street_idx[order]],
    }, geometry=pieces[order])


def _merge_small(pieces: np.ndarray, street_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold slivers cut off by street borders into the neighbour (same street) they share most border with."""
    small = shapely.area(pieces) < MIN_GRID_SHARE * GRID_SIZE**2
    big_ids, small_ids = np.flatnonzero(~small), np.flatnonzero(small)
    s, b = shapely.STRtree(pieces[big_ids]).query(pieces[small_ids], predicate="intersects")
    s, b = small_ids[s], big_ids[b]
    same = street_idx[s] == street_idx[b]
    s, b = s[same], b[same]
    shared = shapely.length(shapely.intersection(shapely.boundary(pieces[s]), shapely.boundary(pieces[b])))
    target = {}
    for i in np.argsort(-shared, kind="stable"):
        if shared[i] > 0:
            target.setdefault(s[i], b[i])
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(target.get(i, i), []).append(i)
    merged = [polygonal(shapely.union_all(pieces[members])) for members in groups.values()]
    return np.array(merged, dtype=object), street_idx[list(groups)]
