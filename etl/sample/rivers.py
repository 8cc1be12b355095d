"""A river network draining to the Grand Canal (京杭运河).

Every river is drawn upstream to downstream and ends exactly on a vertex of the river it flows
into; the receiving river is cut into reaches at each confluence, so the reaches form a tree
whose root is the canal's downstream end.
"""

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from shapely.ops import substring

from etl.sample.geo import linear, meander, xy
from etl.sample.real import CANAL_SOURCE

SYNTHETIC_SOURCE = "模拟数据（etl.sample 合成，非实测）"
CANAL = ("京杭运河", "流域性河道", 90.0)
# Rivers that flow straight into the canal: name, class, width, lon/lat waypoints upstream to
# downstream; the last waypoint is moved onto the canal.
TRUNKS = [
    ("伯渎港", "骨干河道", 40.0, [(120.530, 31.477), (120.515, 31.476), (120.500, 31.471), (120.480, 31.466),
                                (120.460, 31.462), (120.440, 31.458), (120.428, 31.459), (120.418, 31.459)]),
    ("九里河", "骨干河道", 35.0, [(120.495, 31.547), (120.468, 31.556), (120.437, 31.560), (120.408, 31.550),
                                (120.388, 31.532), (120.375, 31.514), (120.366, 31.505)]),
    ("新蠡河", "骨干河道", 30.0, [(120.505, 31.515), (120.480, 31.506), (120.455, 31.497), (120.430, 31.486),
                                (120.412, 31.475), (120.404, 31.470)]),
    ("江溪河", "支河", 18.0, [(120.432, 31.527), (120.412, 31.516), (120.393, 31.501), (120.383, 31.492)]),
    ("新安河", "支河", 16.0, [(120.362, 31.438), (120.372, 31.455), (120.385, 31.470), (120.395, 31.481)]),
]
BRANCH_NAMES = ["大溪港", "丁村河", "梁鸿河", "坊前河", "泰伯河", "周泾浜", "张塘河", "后宅河", "许巷河",
                "金城河", "华庄浜", "南庄河", "北塘河", "沙墩港", "高浪河", "旺庄河", "春潮河", "锡兴河",
                "梅里河", "蠡塘河", "长江河", "太平港", "新开河", "东亭河", "望亭河", "坊桥港", "薛典河",
                "泰清河", "鸿声港", "西漳河"]
DITCH_FAMILY = "陈杨王周吴徐孙朱胡沈钱顾蒋唐邹秦华薛许尤"
DITCH_KIND = ["家浜", "家沟", "巷浜", "塘沟"]


@dataclass
class River:
    name: str
    river_class: str
    width: float
    coords: np.ndarray  # upstream to downstream, metres
    receiver: int | None  # index of the river this one flows into; None for the canal
    at: float = 0.0  # distance along the receiver of the confluence

    @property
    def line(self) -> shapely.LineString:
        return shapely.LineString(self.coords)


def network(district: shapely.Polygon, canal: shapely.LineString, rng: np.random.Generator) -> list[River]:
    rivers = [River(*CANAL, coords=_clip_canal(canal, district), receiver=None)]
    for name, cls, width, waypoints in TRUNKS:
        points = np.array([xy(*p) for p in waypoints])
        at = rivers[0].line.project(shapely.Point(points[-1]))
        points[-1] = _join(rivers[0], at)
        rivers.append(River(name, cls, width, meander(points, rng, 70.0, 2400.0), receiver=0, at=at))
    inner = district.buffer(-120.0)
    names = list(rng.permutation(BRANCH_NAMES))
    ditch_names = list(rng.permutation([f + k for f in DITCH_FAMILY for k in DITCH_KIND]))
    for r in range(1, len(TRUNKS) + 1):
        for _ in range(int(rivers[r].line.length // 2600) + 1):
            _add_tributary(rivers, r, rng, inner, str(names.pop()), "支河", (1500.0, 3500.0))
    branches = range(len(TRUNKS) + 1, len(rivers))
    for r in branches:
        if rng.random() < 0.6:
            _add_tributary(rivers, r, rng, inner, str(ditch_names.pop()), "沟渠", (700.0, 1500.0))
    return rivers


def reaches(rivers: list[River]) -> gpd.GeoDataFrame:
    """Each river cut at its confluences, one feature per reach."""
    records, geoms = [], []
    for i, river in enumerate(rivers):
        joins = [rivers[t].coords[-1] for t in range(len(rivers)) if rivers[t].receiver == i]
        cuts = sorted(int(np.flatnonzero((river.coords == p).all(axis=1))[0]) for p in joins)
        bounds = [0, *cuts, len(river.coords) - 1]
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
            records.append({
                "code": f"XWHD{i:03d}-{k:02d}", "name": river.name, "river_class": river.river_class,
                "width_m": river.width, "source": CANAL_SOURCE if river.receiver is None else SYNTHETIC_SOURCE,
            })
            geoms.append(shapely.MultiLineString([river.coords[a:b + 1]]))
    return gpd.GeoDataFrame(records, geometry=geoms)


def upstream(rivers: list[River], r: int, at: float) -> shapely.Geometry:
    """Everything that drains through river r at distance `at`: its own course above that point
    and every river joining it higher up, with all their tributaries."""
    parts = [substring(rivers[r].line, 0.0, at)]
    pending = [t for t, river in enumerate(rivers) if river.receiver == r and river.at <= at]
    while pending:
        t = pending.pop()
        parts.append(rivers[t].line)
        pending.extend(u for u, river in enumerate(rivers) if river.receiver == t)
    return shapely.MultiLineString(parts)


def _clip_canal(canal: shapely.LineString, district: shapely.Polygon) -> np.ndarray:
    inside = shapely.get_coordinates(linear(shapely.intersection(canal, district)))
    along = canal.project(shapely.points(inside))
    return shapely.get_coordinates(substring(canal, along.min() - 1500.0, along.max() + 1500.0))


def _point_at(coords: np.ndarray, at: float) -> tuple[int, np.ndarray]:
    cumulative = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(coords, axis=0).T))])
    i = int(np.clip(np.searchsorted(cumulative, at) - 1, 0, len(coords) - 2))
    t = (at - cumulative[i]) / (cumulative[i + 1] - cumulative[i])
    return i, coords[i] + t * (coords[i + 1] - coords[i])


def _join(receiver: River, at: float) -> np.ndarray:
    """Insert a vertex at distance `at` along the receiver and return it: the confluence."""
    i, point = _point_at(receiver.coords, at)
    receiver.coords = np.insert(receiver.coords, i + 1, point, axis=0)
    return point


def _add_tributary(rivers, r, rng, inner, name, cls, length_range) -> None:
    receiver = rivers[r]
    line = receiver.line
    taken = [river.at for river in rivers if river.receiver == r]
    others = shapely.union_all([river.line for river in rivers])
    for _ in range(30):
        at = rng.uniform(0.12, 0.88) * line.length
        if any(abs(at - other) < 600.0 for other in taken):
            continue
        _, mouth = _point_at(receiver.coords, at)
        ahead, behind = _point_at(receiver.coords, min(at + 30.0, line.length))[1], _point_at(receiver.coords, max(at - 30.0, 0.0))[1]
        tangent = (ahead - behind) / np.hypot(*(ahead - behind))
        normal = np.array([-tangent[1], tangent[0]]) * rng.choice([-1.0, 1.0])
        lean = rng.uniform(0.2, 0.7)  # tributaries meet the receiver heading downstream
        heading = normal * np.cos(lean) - tangent * np.sin(lean)
        length = rng.uniform(*length_range)
        bend = rng.uniform(-0.15, 0.15) * length * np.array([-heading[1], heading[0]])
        points = np.array([mouth + heading * length, mouth + heading * length * 0.5 + bend, mouth])
        coords = meander(points, rng, 0.04 * length, 0.5 * length)
        course = shapely.LineString(coords)
        if not inner.contains(course) or shapely.distance(substring(course, 0.0, course.length - 300.0), others) < 200.0:
            continue
        coords[-1] = _join(receiver, at)
        width = rng.uniform(10.0, 20.0) if cls == "支河" else rng.uniform(4.0, 8.0)
        rivers.append(River(name, cls, round(float(width), 1), coords, receiver=r, at=at))
        return
