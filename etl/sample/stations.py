"""Water-quality monitoring stations, on the river lines, mostly at bridges where a road crosses."""

import geopandas as gpd
import numpy as np
import shapely

from etl.sample.rivers import River

MIN_STATIONS = 30
PER_RIVER = {"流域性河道": 4, "骨干河道": 4, "支河": 1, "沟渠": 0}
BRIDGE_ROADS = ("快速路", "主干路", "次干路")
OLD_BRIDGES = ["太平桥", "永安桥", "万福桥", "通济桥", "广济桥", "安乐桥", "仁寿桥", "吉祥桥", "兴隆桥", "福寿桥",
               "利民桥", "跃进桥", "胜利桥", "红旗桥", "长安桥", "聚龙桥", "会龙桥", "寿星桥", "迎春桥", "庆丰桥"]
TARGET_CLASS = {"流域性河道": ([3], [1.0]), "骨干河道": ([3, 4], [0.7, 0.3]),
                "支河": ([3, 4], [0.4, 0.6]), "沟渠": ([4, 5], [0.8, 0.2])}


def stations(rivers: list[River], roads: gpd.GeoDataFrame, streets: gpd.GeoDataFrame,
             district: shapely.Polygon, rng: np.random.Generator) -> gpd.GeoDataFrame:
    counts = [PER_RIVER[r.river_class] + (2 if r.receiver == 0 and r.river_class == "支河" else 0) for r in rivers]
    while sum(counts) < MIN_STATIONS:
        counts[int(np.argmax([r.line.length / (c + 1) for r, c in zip(rivers, counts)]))] += 1
    bridges = roads[roads.road_class.isin(BRIDGE_ROADS)]
    inner = district.buffer(-30.0)
    spare_names = list(rng.permutation(OLD_BRIDGES))
    used: set[str] = set()
    records, points = [], []
    for r, (river, n) in enumerate(zip(rivers, counts)):
        line = river.line
        crossings = _crossings(line, bridges)
        for k in range(n):
            placed = _place(river, line, k, n, crossings, used, inner, rng)
            if placed is None:
                continue
            at, name, note = placed
            point = line.interpolate(at)
            if name is None:
                name = f"{river.name}-{spare_names[len(points) % len(spare_names)]}"
            used.add(name)
            street = streets.name.values[np.argmin(shapely.distance(streets.geometry.values, point))]
            classes, weights = TARGET_CLASS[river.river_class]
            records.append({
                "name": name, "water_body": river.name, "evaluation_type": "river",
                "station_type": "auto" if rng.random() < 0.85 else "manual",
                "target_class": int(rng.choice(classes, p=weights)), "location_note": f"{street}，{note}",
                "river": r, "at": at,
            })
            points.append(point)
    table = gpd.GeoDataFrame(records, geometry=points)
    table.insert(0, "code", [f"XW-{i:03d}" for i in range(1, len(table) + 1)])
    table["target_class"] = table["target_class"].astype("int32")
    return table


def _place(river, line, k, n, crossings, used, inner, rng) -> tuple[float, str | None, str] | None:
    """A position in the k-th of n equal stretches of the river, inside the district; at a bridge
    when a road crosses that stretch (the station sits a little downstream of it)."""
    slot = line.length / n
    for road, where in sorted(crossings, key=lambda c: abs(c[1] - (k + 0.6) * slot)):
        name = f"{river.name}-{road}桥"
        offset = float(rng.uniform(30.0, 120.0))
        if k * slot + 150 < where < (k + 1) * slot - 150 and name not in used and inner.contains(line.interpolate(where + offset)):
            return where + offset, name, f"{road}桥下游约{offset:.0f}米"
    for _ in range(10):
        at = float(np.clip((k + rng.uniform(0.2, 0.8)) * slot, 150.0, line.length - 150.0))
        if inner.contains(line.interpolate(at)):
            note = "入京杭运河口上游" if river.receiver == 0 and at > 0.8 * line.length else "河道中泓"
            return at, None, note
    return None


def _crossings(line: shapely.LineString, roads: gpd.GeoDataFrame) -> list[tuple[str, float]]:
    """(road name, distance along the river) of each place a road crosses it."""
    hits = shapely.intersection(roads.geometry.values, line)
    found = []
    for name, hit in zip(roads.name, hits):
        for point in shapely.get_parts(hit):
            if point.geom_type == "Point":
                found.append((name, line.project(point)))
    return found
