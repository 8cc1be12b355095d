"""Pollution sources (排污单位), clustered in the industrial areas and along rivers, and written the way
an environment bureau hands them over: a UTF-8-with-BOM CSV with Chinese headers and GCJ-02 coordinates."""

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from etl.offset import wgs84_to_gcj02
from etl.sample.geo import xy, xy_to_lonlat
from etl.sample.real import DISTRICT_CODE
from etl.sample.rivers import River
from layers.codes import CREDIT_ALPHABET, credit_code_check_char, industries

# Industrial areas: lon, lat, spread (m), share of the clustered sources.
CLUSTERS = [
    (120.385, 31.545, 1200.0, 0.22),  # 旺庄, the old 高新区 B 区
    (120.405, 31.515, 1000.0, 0.16),  # 江溪
    (120.445, 31.470, 1200.0, 0.20),  # 硕放工业园
    (120.478, 31.525, 1100.0, 0.16),  # 梅村
    (120.515, 31.488, 900.0, 0.12),  # 鸿山
    (120.378, 31.458, 900.0, 0.14),  # 新安
]
NEAR_RIVER_SHARE = 0.25
PERMIT_CLASSES = ["重点管理", "简化管理", "登记管理"]
# Heavy dischargers are mostly under 重点管理; the rest mostly only register.
HEAVY = re.compile(r"^(C17|C19|C22|C26|C27|C3360|C384|C3973|C3974|C3982|D44|D4620|N7724)")
PERMIT_MIX = {"heavy": [0.30, 0.45, 0.25], "other": [0.04, 0.30, 0.66]}
# The 22nd character of the permit number (HJ 608): P for a permit, W for a registration receipt;
# V and X also occur. This is the usual pattern, not a rule we could verify per case.
PERMIT_LETTERS = {"重点管理": (["P"], [1.0]), "简化管理": (["P", "V"], [0.7, 0.3]), "登记管理": (["W", "X"], [0.8, 0.2])}
KEY_UNIT_SHARE = {"重点管理": 0.85, "简化管理": 0.12, "登记管理": 0.0}
INDUSTRY_WEIGHT = [("C39", 5.0), ("C38", 3.0), ("C33", 2.5), ("C35", 2.5), ("C36", 2.5), ("O", 2.0),
                   ("C26", 1.5), ("C27", 1.5), ("C29", 1.2), ("C31", 1.0), ("C23", 1.0), ("D44", 0.2)]
TRADE_CHARS = "华新瑞博创科达鑫源恒泰宏盛联精微芯光景富德安锦润通力威嘉正信诚合汇丰益禾天宇东海明星睿智晶捷腾凯欣隆昌荣晟澄锡吴梁蠡"
# First match on the industry name gives the words a company in that trade puts in its name.
TRADE_WORDS = [
    ("专用设备", ["半导体设备", "精密机械"]), ("电子电路", ["电路", "线路板", "电子"]),
    ("集成电路", ["微电子", "集成电路", "芯片科技"]), ("半导体", ["半导体", "微电子"]), ("显示", ["光电显示", "显示科技"]),
    ("光电子", ["光电", "光电科技"]), ("光伏", ["光伏", "新能源科技"]), ("电池", ["新能源", "电池", "储能科技"]),
    ("电线", ["电缆", "线缆"]), ("传感器", ["传感科技", "传感器"]), ("电子专用材料", ["电子材料", "新材料"]),
    ("汽车零部件", ["汽车部件", "汽车零部件", "精密部件"]), ("汽车修理", ["汽车维修服务", "汽车服务"]),
    ("表面处理", ["表面处理", "电镀", "金属表面技术"]), ("铸造", ["铸造", "精密铸造"]), ("金属结构", ["钢结构", "金属制品"]),
    ("钢压延", ["特钢", "钢业"]), ("金属废料", ["再生资源", "金属回收"]), ("药剂", ["环保材料", "水处理材料"]),
    ("涂料", ["涂料", "化工"]), ("染料", ["染料化工", "化工"]), ("树脂", ["新材料", "树脂"]), ("化学", ["化工", "精细化工"]),
    ("塑料", ["塑业", "塑料制品", "塑胶"]), ("轮胎", ["轮胎", "橡胶"]), ("生物药品", ["生物制药", "生物科技"]),
    ("药", ["制药", "药业", "医药"]), ("卫生材料", ["医疗用品", "医用材料"]), ("印刷", ["印务", "包装印刷", "彩印"]),
    ("纸|浆", ["纸业", "纸品"]), ("家具", ["家具", "木业"]), ("服装", ["服饰", "制衣"]), ("皮革", ["皮革", "制革"]),
    ("染整|印染", ["印染", "纺织印染"]), ("屠宰", ["肉类食品", "食品"]), ("啤酒", ["啤酒", "酒业"]),
    ("发电|热电", ["热电", "能源"]), ("污水", ["污水处理", "水务"]), ("危险废物", ["危废处置", "环境科技"]),
    ("治理|环境卫生", ["环保科技", "环境工程", "环境服务"]),
]
CSV_HEADERS = {
    "name": "单位名称", "credit_code": "统一社会信用代码", "industry_code": "行业代码", "industry_name": "行业类别",
    "permit_class": "排污许可管理类别", "key_unit": "环境监管重点单位", "permit_id": "排污许可证编号", "address": "地址",
}


def sources(n: int, district: shapely.Polygon, rivers: list[River], roads: gpd.GeoDataFrame,
            rng: np.random.Generator) -> gpd.GeoDataFrame:
    inner = district.buffer(-30.0)
    n_river = int(n * NEAR_RIVER_SHARE)
    points = np.vstack([_near_clusters(n - n_river, inner, rng), _near_rivers(n_river, rivers, inner, rng)])
    table = industries()
    codes = np.array(sorted(table))
    weights = np.array([next((w for prefix, w in INDUSTRY_WEIGHT if c.startswith(prefix)), 0.6) for c in codes])
    industry = rng.choice(codes, n, p=weights / weights.sum())
    permit = np.array([rng.choice(PERMIT_CLASSES, p=PERMIT_MIX["heavy" if HEAVY.match(c) else "other"]) for c in industry])
    credit = _credit_codes(n, rng)
    letters = [rng.choice(PERMIT_LETTERS[p][0], p=PERMIT_LETTERS[p][1]) for p in permit]
    geoms = shapely.points(points)
    nearest_road = roads.name.values[shapely.STRtree(roads.geometry.values).query_nearest(geoms, all_matches=False)[1]]
    numbers = rng.integers(1, 900, n)
    return gpd.GeoDataFrame({
        "credit_code": credit,
        "name": _names(industry, table, rng),
        "industry_code": industry,
        "industry_name": [table[c] for c in industry],
        "permit_class": permit,
        "key_unit": rng.random(n) < np.array([KEY_UNIT_SHARE[p] for p in permit]),
        "permit_id": [f"{c}001{letter}" for c, letter in zip(credit, letters)],
        "address": [f"江苏省无锡市新吴区{road}{k}号" for road, k in zip(nearest_road, numbers)],
    }, geometry=geoms)


def write_csv(table: gpd.GeoDataFrame, path: Path) -> None:
    xs, ys = shapely.get_coordinates(table.geometry.values).T
    lon, lat = wgs84_to_gcj02(*xy_to_lonlat(xs, ys))
    out = table[list(CSV_HEADERS)].rename(columns=CSV_HEADERS)
    out["环境监管重点单位"] = np.where(table["key_unit"], "是", "否")
    out["经度"], out["纬度"] = np.round(lon, 6), np.round(lat, 6)
    out.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def _near_clusters(n: int, inner, rng: np.random.Generator) -> np.ndarray:
    centres = np.array([xy(lon, lat) for lon, lat, _, _ in CLUSTERS])
    spread = np.array([s for _, _, s, _ in CLUSTERS])
    share = np.array([w for _, _, _, w in CLUSTERS])
    which = rng.choice(len(CLUSTERS), n, p=share / share.sum())
    points = centres[which] + rng.normal(size=(n, 2)) * spread[which, None]
    outside = ~shapely.contains_xy(inner, points[:, 0], points[:, 1])
    while outside.any():  # redraw the few that fell outside the district
        points[outside] = centres[which[outside]] + rng.normal(size=(outside.sum(), 2)) * spread[which[outside], None]
        outside = ~shapely.contains_xy(inner, points[:, 0], points[:, 1])
    return points


def _near_rivers(n: int, rivers: list[River], inner, rng: np.random.Generator) -> np.ndarray:
    lines = np.array([r.line for r in rivers])
    lengths = shapely.length(lines)
    points = np.empty((n, 2))
    todo = np.arange(n)
    while len(todo):
        line = lines[rng.choice(len(lines), len(todo), p=lengths / lengths.sum())]
        at = rng.uniform(0.05, 0.95, len(todo)) * shapely.length(line)
        a = shapely.get_coordinates(shapely.line_interpolate_point(line, at))
        b = shapely.get_coordinates(shapely.line_interpolate_point(line, at + 10.0))
        normal = (b - a)[:, ::-1] * [-1, 1] / np.hypot(*(b - a).T)[:, None]
        points[todo] = a + normal * (rng.choice([-1, 1], len(todo)) * rng.uniform(60.0, 400.0, len(todo)))[:, None]
        todo = todo[~shapely.contains_xy(inner, points[todo, 0], points[todo, 1])]
    return points


def _credit_codes(n: int, rng: np.random.Generator) -> list[str]:
    """Unified social credit codes: 9 (market regulator) 1 (enterprise) + county + organisation code + check."""
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < n:
        if rng.random() < 0.45:  # post-2015 registrations
            org = "MA" + "".join(rng.choice(list(CREDIT_ALPHABET), 7))
        else:  # older 8-digit organisation codes with their GB 11714 check character
            body = rng.integers(0, 10, 8)
            check = 11 - int(body @ [3, 7, 9, 10, 5, 8, 4, 2]) % 11
            org = "".join(map(str, body)) + {10: "X", 11: "0"}.get(check, str(check))
        first17 = f"91{DISTRICT_CODE}{org}"
        code = first17 + credit_code_check_char(first17)
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def _names(industry: np.ndarray, table: dict[str, str], rng: np.random.Generator) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for code in industry:
        words = next((w for pattern, w in TRADE_WORDS if re.search(pattern, table[code])), ["科技", "实业"])
        while True:
            trade = "".join(rng.choice(list(TRADE_CHARS), 2, replace=False))
            word = rng.choice(words)
            form = rng.choice(["有限公司", "股份有限公司"], p=[0.85, 0.15])
            style = rng.random()
            if style < 0.08:
                name = f"{trade}{word}（无锡）有限公司"
            else:
                place = "无锡" if style < 0.6 else "无锡市" if style < 0.75 else "江苏" if style < 0.92 else "无锡新区"
                name = f"{place}{trade}{word}{form}"
            if name not in seen:
                break
        seen.add(name)
        names.append(name)
    return names
