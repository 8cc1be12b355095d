"""A plausible road network: a slightly turned, gently warped grid of 主干路/次干路, 支路 inside the
blocks and two 快速路, clipped to the district.

The whole network is bent by one smooth displacement field after it is laid out, so roads curve
like real ones while junctions stay joined.
"""

import geopandas as gpd
import numpy as np
import shapely

from etl.sample.geo import SmoothField, densify, linear

SPACING = 900.0  # between grid roads; every second one is a 主干路
TURN = np.radians(-9.0)  # the grid is turned a little off north
LANES = {"快速路": 8, "主干路": 6, "次干路": 4, "支路": 2}

# North-south roads take river names, east-west roads mountain and place names, in the local style.
NS_NAMES = ["长江路", "新华路", "锡士路", "震泽路", "汉江路", "湘江路", "珠江路", "漓江路", "锡梅路", "新硕路",
            "鸿山路", "泰伯大道", "春笋路", "梅育路", "硕放路", "净慧路", "行舟路", "锡兴路", "团结路", "长安路",
            "新梅路", "江溪路", "坊前路", "清晏路", "新友路", "薛典路", "嘉陵江路", "闽江路", "乌江路", "岷江路"]
EW_NAMES = ["金城东路", "高浪东路", "旺庄路", "新光路", "叙丰路", "香楠路", "和风路", "清源路", "泰山路", "黄山路",
            "华山路", "嵩山路", "天山路", "衡山路", "新韵路", "观山路", "菱湖大道", "振发路", "新洲路", "鸿祥路",
            "梅里路", "锡贤路", "南丰路", "机场路", "新安路", "五湖大道", "具区路", "太科园路"]
LANE_PREFIXES = ["行创", "菱湖", "新梅", "锡鸿", "硕丰", "江溪", "观澜", "龙山", "新景", "梅荆", "新锡", "建业",
                 "新华", "旺庄", "春潮", "长江", "凌霄", "中通", "松芝", "震泽"]
ORDINALS = "一二三四五六七八九十"
EXPRESSWAYS = ["江海快速路", "锡东快速路"]


def roads(district: shapely.Polygon, rng: np.random.Generator) -> gpd.GeoDataFrame:
    centre = np.array(shapely.get_coordinates(district.centroid)[0])
    half = 0.5 * np.hypot(*(np.array(district.bounds[2:]) - district.bounds[:2])) + SPACING
    ticks = np.arange(-half, half + 1, SPACING)
    cols = ticks + rng.uniform(-0.15, 0.15, len(ticks)) * SPACING  # x of north-south roads (grid frame)
    rows = ticks + rng.uniform(-0.15, 0.15, len(ticks)) * SPACING
    lines: list[tuple[str, str, np.ndarray]] = []  # (class, kind, points in the grid frame)
    for kind, positions, crossing in (("ns", cols, rows), ("ew", rows, cols)):
        for i, p in enumerate(positions):
            cls = "主干路" if i % 2 == 0 else "次干路"
            lo, hi = -half, half
            if cls == "次干路" and rng.random() < 0.35:  # some secondary roads end at a junction
                lo, hi = np.sort(rng.choice(crossing, 2, replace=False))
            lines.append((cls, kind, _segment(kind, p, lo, hi)))
    for i in range(len(cols) - 1):
        for j in range(len(rows) - 1):
            if rng.random() < 0.65:
                f = rng.uniform(0.35, 0.65)
                if rng.random() < 0.5:
                    lines.append(("支路", "ns", _segment("ns", cols[i] + f * (cols[i + 1] - cols[i]), rows[j], rows[j + 1])))
                else:
                    lines.append(("支路", "ew", _segment("ew", rows[j] + f * (rows[j + 1] - rows[j]), cols[i], cols[i + 1])))
    mid = rows[np.argmin(np.abs(rows))]
    lines.append(("快速路", "ew", _segment("ew", mid, -half, half)))
    lines.append(("快速路", "diag", np.array([[-0.7 * half, 0.75 * half], [0.6 * half, -0.8 * half]])))

    warp = SmoothField(rng, amplitude=120.0, wavelength=10000.0)
    rotation = np.array([[np.cos(TURN), -np.sin(TURN)], [np.sin(TURN), np.cos(TURN)]])
    records, geoms = [], []
    names = _Names(rng)
    for cls, kind, points in lines:
        pts = densify(points, 50.0) @ rotation.T + centre
        dx, dy = warp(pts[:, 0], pts[:, 1])
        geom = linear(shapely.intersection(shapely.LineString(pts + np.column_stack([dx, dy])), district), 80.0)
        if geom.is_empty or geom.length < 300:
            continue
        records.append({"name": names.take(cls, kind), "road_class": cls, "lanes": _lanes(cls, rng)})
        geoms.append(geom)
    table = gpd.GeoDataFrame(records, geometry=geoms)
    table.insert(0, "code", [f"320214DL{i:05d}" for i in range(1, len(table) + 1)])
    table["lanes"] = table["lanes"].astype("int32")
    return table


def _segment(kind: str, at: float, lo: float, hi: float) -> np.ndarray:
    return np.array([[at, lo], [at, hi]] if kind == "ns" else [[lo, at], [hi, at]])


def _lanes(cls: str, rng: np.random.Generator) -> int:
    if cls == "主干路" and rng.random() < 0.3:
        return 8
    if cls == "次干路" and rng.random() < 0.2:
        return 6
    return LANES[cls]


class _Names:
    """Hands out road names: named pools for grid roads, "<prefix><ordinal>路" for 支路."""

    def __init__(self, rng: np.random.Generator):
        self._pools = {"ns": list(rng.permutation(NS_NAMES)), "ew": list(rng.permutation(EW_NAMES))}
        self._expressways = list(EXPRESSWAYS)
        self._lanes = [f"{p}{o}路" for p in rng.permutation(LANE_PREFIXES) for o in ORDINALS]
        self._spare = 0

    def take(self, cls: str, kind: str) -> str:
        if cls == "快速路":
            return self._expressways.pop(0)
        pool = self._pools.get(kind) if cls != "支路" else self._lanes
        if pool:
            return str(pool.pop(0))
        self._spare += 1
        return f"新{ORDINALS[self._spare % 10]}{self._spare}号路"
