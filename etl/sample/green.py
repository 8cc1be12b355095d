"""Green spaces (园林绿地) by the classes of CJJ/T 85-2017: parks of every size, squares and greens attached to
buildings spread over the streets, and protective belts along the expressways and the main rivers.

Each green space lies inside one street (a few metres off its border), so summing them per street counts each once.
"""

from collections.abc import Iterator
from itertools import cycle

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.ops import substring

from etl.sample.geo import polygonal

# class code, name, how many, area range (m²), share of the area under vegetation (绿化覆盖)
CLASSES = [
    ("G11", "综合公园", 4, (120_000, 300_000), (0.80, 0.92)),
    ("G12", "社区公园", 14, (10_000, 50_000), (0.75, 0.90)),
    ("G13", "专类公园", 2, (30_000, 80_000), (0.70, 0.88)),
    ("G14", "游园", 28, (2_000, 10_000), (0.70, 0.90)),
    ("G3", "广场用地", 4, (8_000, 20_000), (0.25, 0.45)),
    ("XG", "附属绿地", 24, (3_000, 20_000), (0.80, 0.95)),
]
BELT = ("G2", "防护绿地", (0.85, 0.95))
BELTS = 20
BELT_WIDTH = (20.0, 40.0)  # metres each side of the road or river
BELT_LENGTH = (600.0, 1500.0)
CARRIAGEWAY = 12.0  # metres each side of a belt's line left to the road or river itself
BELTED = {"roads": ("快速路",), "rivers": ("流域性河道", "骨干河道")}
PARK_WORDS = ["金城", "新洲", "梅里", "伯渎", "鸿声", "春潮", "锡梅", "长江", "菱湖", "泰伯", "观澜", "龙山", "新华",
              "旺庄", "江溪", "硕放", "蠡湖", "新安", "后宅", "坊前", "南星", "高浪", "薛典", "长安", "清源", "和风"]
THEMES = {"G13": ["植物园", "湿地公园"], "G3": ["广场"], "G11": ["公园"], "G12": ["公园"], "G14": ["游园"]}
BORDER = 5.0  # metres kept off street borders, so no green space touches two streets
GRADES = {"G11": "一级", "G13": "一级", "G12": "二级", "G3": "二级", "G14": "二级", "XG": "三级", "G2": "三级"}


def green_spaces(streets: gpd.GeoDataFrame, roads: gpd.GeoDataFrame, reaches: gpd.GeoDataFrame,
                 lake: shapely.Polygon, rng: np.random.Generator) -> gpd.GeoDataFrame:
    wet = shapely.union(lake, shapely.union_all(shapely.buffer(reaches.geometry.values, reaches["width_m"] / 2 + 5)))
    inside = [shapely.difference(s.buffer(-BORDER), wet) for s in streets.geometry.values]
    plan = [(code, name, cover, sizes) for code, name, count, sizes, cover in CLASSES for _ in range(count)]
    plan += [(*BELT, None)] * BELTS
    taken = shapely.Polygon()
    words = cycle(rng.permutation(PARK_WORDS).tolist())  # a place word comes again only after all the others
    records, geoms = [], []
    for code, name, cover, sizes in plan:
        street = int(rng.integers(len(streets)))
        drawn = _belt(inside[street], roads, reaches, rng) if sizes is None else \
            _blob(inside[street], rng.uniform(*sizes), rng)
        shape = polygonal(shapely.difference(drawn, taken))  # green spaces do not overlap
        if shape.is_empty:
            continue
        taken = shapely.union(taken, shape)
        records.append(_record(code, name, cover, shape, streets, street, words, rng))
        geoms.append(shape)
    table = gpd.GeoDataFrame(records, geometry=geoms)
    table.insert(0, "code", [f"320214LD{i:04d}" for i in range(1, len(table) + 1)])
    table["built_on"] = pd.to_datetime(table["built_on"]).astype("datetime64[ms]")
    return table


def _record(code: str, name: str, cover: tuple, shape, streets, street: int, words: Iterator[str],
            rng: np.random.Generator) -> dict:
    """Parks, gardens and squares have names (a place word and a kind); belts and attached greens none."""
    label = f"{next(words)}{rng.choice(THEMES[code])}" if code in THEMES else None
    year = int(rng.integers(1998, 2025))
    return {
        "name": label, "green_class": code, "class_name": name, "area_m2": round(shape.area, 1),
        "cover_m2": round(shape.area * rng.uniform(*cover), 1), "maintenance_grade": GRADES[code],
        "manager": f"{streets['name'].iloc[street]}城市建设管理办公室" if code in ("G14", "XG", "G2") else "新吴区园林绿化管理所",
        "street_code": streets["code"].iloc[street], "built_on": f"{year}-{int(rng.integers(1, 13)):02d}-01",
    }


def _blob(area: shapely.Geometry, size: float, rng: np.random.Generator) -> shapely.MultiPolygon:
    """An irregular round shape of about `size` m² at a random place of `area`, clipped to it."""
    minx, miny, maxx, maxy = area.bounds
    for _ in range(50):
        centre = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if area.contains(centre):
            break
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    wobble = sum(rng.uniform(0.04, 0.12) * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    radius = np.sqrt(size / np.pi) * (1 + wobble)
    ring = np.column_stack([centre.x + radius * np.cos(angles), centre.y + radius * np.sin(angles)])
    return polygonal(shapely.intersection(shapely.Polygon(ring), area))


def _belt(area, roads, reaches, rng: np.random.Generator) -> shapely.MultiPolygon:
    """A strip along an expressway or a main river, inside `area`."""
    lines = [*roads.geometry[roads["road_class"].isin(BELTED["roads"])], *reaches.geometry[
        reaches["river_class"].isin(BELTED["rivers"])]]
    near = shapely.intersection(lines, area.buffer(BELT_WIDTH[1] + 60))
    near = [part for g in near for part in shapely.get_parts(shapely.line_merge(g)) if part.length > BELT_LENGTH[0]]
    if not near:
        return shapely.MultiPolygon()
    line = near[int(rng.integers(len(near)))]
    length = rng.uniform(*BELT_LENGTH)
    start = rng.uniform(0, max(line.length - length, 0))
    piece = substring(line, start, start + length)
    strip = shapely.difference(piece.buffer(rng.uniform(*BELT_WIDTH), cap_style="flat"), piece.buffer(CARRIAGEWAY))
    return polygonal(shapely.intersection(strip, area))
