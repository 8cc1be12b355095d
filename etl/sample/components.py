"""City components (城市部件) along the roads, streamed to the GeoPackage in chunks.

Each chunk has its own seeded random stream and only the per-class serial counters carry over,
so memory stays flat however many components are asked for.
"""

from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from etl.sample.geo import rng as stream
from etl.sample.real import DISTRICT_CODE
from layers.codes import component_classes

CHUNK = 100_000
# Relative frequency by 部件名称; classes not listed are rare (DEFAULT_WEIGHT).
WEIGHTS = {
    "污水井盖": 8.0, "雨水井盖": 10.0, "上水井盖": 6.0, "电力井盖": 3.0, "通讯井盖": 3.0, "燃气井盖": 1.5,
    "路灯井盖": 1.0, "网络井盖": 0.6, "电视井盖": 0.4, "雨水箅子": 8.0, "路灯": 12.0, "立杆": 2.0, "景观灯": 1.0,
    "地灯": 0.5, "消防设施": 4.0, "垃圾箱": 8.0, "行道树": 6.0, "护树设施": 1.0, "交通标志牌": 3.0,
    "交通信号灯": 1.0, "交通护栏": 2.0, "路名牌": 1.5, "监控电子眼": 1.5, "公交站亭": 0.8, "存车支架": 1.0,
    "通讯交接箱": 1.0, "电力设施": 1.0, "变压器（箱）": 0.8, "广告牌匾": 1.5, "街头坐椅": 1.0, "宣传栏": 0.5,
    "绿地护栏": 0.5, "停车咪表": 0.3, "公共厕所": 0.2, "报刊亭": 0.2,
}
DEFAULT_WEIGHT = 0.05
ROAD_WEIGHT = {"快速路": 1.5, "主干路": 1.6, "次干路": 1.0, "支路": 0.6}  # components per metre, relatively
STATUSES = (["完好", "破损", "占用", "丢失", "废弃"], [0.88, 0.06, 0.025, 0.015, 0.02])
# Owner by a keyword of the class name, first match wins; otherwise by major class.
OWNERS = [
    ("电力|变压器|高压线", ["国网江苏省电力有限公司无锡供电分公司"]),
    ("通讯|网络|电话", ["中国电信股份有限公司无锡分公司", "中国移动通信集团江苏有限公司无锡分公司", "中国联合网络通信有限公司无锡市分公司"]),
    ("电视", ["江苏有线网络发展有限责任公司无锡分公司"]),
    ("燃气|输油", ["无锡华润燃气有限公司"]),
    ("上水|供水|民用水井|消防", ["无锡市水务集团有限公司"]),
    ("公安|监控|治安|交通信号|交通岗", ["无锡市公安局新吴分局"]),
    ("公交", ["无锡市公共交通集团有限责任公司"]),
    ("污水|雨水|中水|路灯|地灯|立杆|交通|路名|桥|地下通道|化粪池", ["无锡市新吴区建设局"]),
]
MAJOR_OWNERS = {"03": "无锡市新吴区城市管理局", "04": "无锡市新吴区园林绿化管理所", "05": "无锡市新吴区住房和城乡建设局"}
DEFAULT_OWNER = "无锡市新吴区城市管理局"
FIRST_DAY, LAST_DAY = np.datetime64("2006-01-01"), np.datetime64("2026-06-30")
SERIAL_LIMIT = 999_999


def chunks(total: int, roads: gpd.GeoDataFrame, grids: gpd.GeoDataFrame, seed: int) -> Iterator[gpd.GeoDataFrame]:
    classes = component_classes()
    shares = _shares(np.array([WEIGHTS.get(c.minor_name, DEFAULT_WEIGHT) for c in classes]), total)
    owners = [_owners(c) for c in classes]
    segments = _segments(roads)
    grid_tree = shapely.STRtree(grids.geometry.values)
    serial = np.zeros(len(classes), dtype=np.int64)
    for index, start in enumerate(range(0, total, CHUNK)):
        n = min(CHUNK, total - start)
        rng = stream(seed, "components", index)
        kind = rng.choice(len(classes), n, p=shares)
        # Serials count up per class in file order, across chunks.
        rank = pd.Series(kind).groupby(kind).cumcount().to_numpy() + 1 + serial[kind]
        serial += np.bincount(kind, minlength=len(classes))
        if serial.max() > SERIAL_LIMIT:
            raise ValueError(f"more than {SERIAL_LIMIT} components of one class: the 6-digit serial would overflow")
        points = _along_roads(segments, n, rng)
        hit_point, hit_grid = grid_tree.query(points, predicate="intersects")
        grid = np.full(n, -1)
        first = np.unique(hit_point, return_index=True)[1]  # a point on a shared border takes the first grid
        grid[hit_point[first]] = hit_grid[first]
        missing = grid < 0
        if missing.any():  # a few metres outside the district at its edge
            grid[missing] = grid_tree.query_nearest(points[missing], all_matches=False)[1]
        day = FIRST_DAY + rng.integers(0, (LAST_DAY - FIRST_DAY).astype(int) + 1, n)
        table = gpd.GeoDataFrame({
            "code": [f"{DISTRICT_CODE}{classes[k].major_code}{classes[k].minor_code}{s:06d}" for k, s in zip(kind, rank)],
            "major_class": [classes[k].major_code for k in kind],
            "minor_class": [classes[k].minor_code for k in kind],
            "class_name": [classes[k].minor_name for k in kind],
            "status": rng.choice(STATUSES[0], n, p=STATUSES[1]),
            "owner_unit": [owners[k][i % len(owners[k])] for i, k in enumerate(kind)],
            "street_code": grids.street_code.to_numpy()[grid],
            "installed_on": pd.arrays.ArrowExtensionArray(pa.array(day.astype("int32"), pa.date32())),
        }, geometry=points)
        yield table


def _shares(weights: np.ndarray, total: int) -> np.ndarray:
    """Each class's share of the components. A class that would outgrow its 6-digit serials (the common
    ones past about 8M components) is capped and its excess spread over the others in proportion."""
    shares = weights / weights.sum()
    cap = 0.95 * SERIAL_LIMIT / total  # 5% headroom for the random draw
    if cap * len(shares) < 1:
        raise ValueError(f"at most {int(0.95 * SERIAL_LIMIT * len(shares)):,} components: the 6-digit serials "
                         f"of {len(shares)} classes would overflow")
    while (over := shares > cap).any():
        spare = (shares[over] - cap).sum()
        shares[over] = cap
        shares[~over] += spare * shares[~over] / shares[~over].sum()
    return shares


def _owners(component) -> list[str]:
    for pattern, names in OWNERS:
        if any(word in component.minor_name for word in pattern.split("|")):
            return names
    return [MAJOR_OWNERS.get(component.major_code, DEFAULT_OWNER)]


def _segments(roads: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end and sampling weight (length times the road class's density) of every road segment."""
    parts, road = shapely.get_parts(roads.geometry.values, return_index=True)
    coords, part = shapely.get_coordinates(parts, return_index=True)
    same = part[1:] == part[:-1]  # consecutive vertices of one part
    start, end = coords[:-1][same], coords[1:][same]
    density = np.array([ROAD_WEIGHT[c] for c in roads.road_class])[road[part[:-1][same]]]
    return start, end, np.hypot(*(end - start).T) * density


def _along_roads(segments: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n points beside the roads: a random spot on a random segment (by weight), 3–12 m to one side."""
    start, end, weight = segments
    pick = rng.choice(len(start), n, p=weight / weight.sum())
    direction = end[pick] - start[pick]
    normal = np.column_stack([-direction[:, 1], direction[:, 0]]) / np.hypot(*direction.T)[:, None]
    side = rng.choice([-1.0, 1.0], n) * rng.uniform(3.0, 12.0, n)
    return shapely.points(start[pick] + direction * rng.uniform(0.0, 1.0, (n, 1)) + normal * side[:, None])
