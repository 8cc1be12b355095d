"""A drinking-water source on 贡湖 (Taihu's bay along 新安街道) and its protection zones, drawn as Jiangsu's
approvals usually draw a lake intake's (HJ 338-2018 for large lakes): 一级 the waters within 500 m of the intake
and 200 m of shore behind them, 二级 2,000 m further out over water and land, 准保护区 2,000 m beyond that.

The intake is synthetic; the shore is Taihu's coarse public outline where it crosses the district.
"""

import geopandas as gpd
import numpy as np
import shapely

from etl.sample.geo import polygonal
from etl.sample.real import DISTRICT_CODE
from etl.sample.rivers import SYNTHETIC_SOURCE

SOURCE_CODE = f"{DISTRICT_CODE}SY01"
FIRST_RADIUS, FIRST_SHORE = 500.0, 200.0  # metres
OUTWARD = 2000.0  # each further zone reaches this far beyond the one inside it
LEVELS = [("一级保护区", 2), ("二级保护区", 3), ("准保护区", 3)]  # with their GB 3838 target class
GRID = 0.01  # metres
SOURCE = SYNTHETIC_SOURCE + "；太湖岸线取自 GMT 中文社区 CN-Rivers（约1:400万）"


def zones(district: shapely.Polygon, lake: shapely.Polygon, rng: np.random.Generator) -> gpd.GeoDataFrame:
    # overlays on a 1 cm grid: the zones share the shoreline and each other's borders exactly, so they stay valid
    # once mapped to degrees
    water = shapely.intersection(lake, district, grid_size=GRID)
    land = shapely.difference(district, lake, grid_size=GRID)
    intake = _intake(water, shapely.intersection(lake.boundary, district), rng)
    reach = [shapely.intersection(intake.buffer(FIRST_RADIUS + k * OUTWARD, 64), district, grid_size=GRID)
             for k in range(3)]
    first_water = shapely.intersection(reach[0], water, grid_size=GRID)
    first = shapely.union(first_water, shapely.intersection(first_water.buffer(FIRST_SHORE), land, grid_size=GRID),
                          grid_size=GRID)
    second = shapely.difference(reach[1], first, grid_size=GRID)
    rest = shapely.difference(reach[2], shapely.union(first, second, grid_size=GRID), grid_size=GRID)
    records, geoms = [], []
    for k, ((level, target), zone) in enumerate(zip(LEVELS, (first, second, rest)), start=1):
        zone = polygonal(zone)
        records.append({
            "code": f"{SOURCE_CODE}-{k}", "source_name": "贡湖新安水源地", "source_code": SOURCE_CODE, "level": level,
            "water_type": "湖泊型", "intake_name": "新安取水口",
            "water_area_km2": round(shapely.intersection(zone, water, grid_size=GRID).area / 1e6, 4),
            "land_area_km2": round(shapely.intersection(zone, land, grid_size=GRID).area / 1e6, 4),
            "target_class": target, "supply_capacity": 30.0, "population": 58.0, "water_works": "新安水厂",
            "approval": None, "approved_on": None, "source": SOURCE,
        })
        geoms.append(zone)
    table = gpd.GeoDataFrame(records, geometry=geoms)
    table["target_class"] = table["target_class"].astype("int32")
    table["approved_on"] = table["approved_on"].astype("datetime64[ms]")
    return table


def _intake(water: shapely.Geometry, shore: shapely.Geometry, rng: np.random.Generator) -> shapely.Point:
    """A point a few hundred metres off the longest stretch of the shore, on the water side."""
    line = max(shapely.get_parts(shapely.line_merge(shore)), key=lambda part: part.length)
    at = line.length * rng.uniform(0.4, 0.6)
    here, ahead = np.array(line.interpolate(at).coords[0]), np.array(line.interpolate(at + 10.0).coords[0])
    tangent = (ahead - here) / np.hypot(*(ahead - here))
    offshore = rng.uniform(250.0, 400.0)
    for side in (1.0, -1.0):
        point = shapely.Point(here + side * offshore * np.array([-tangent[1], tangent[0]]))
        if water.contains(point):
            return point
    raise ValueError("the lake's shore in the district has no water beside it")
