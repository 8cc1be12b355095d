"""Radiation monitoring points (辐射监测点位) as the environment bureau lists them: a CSV with Chinese headers and
CGCS2000 经度/纬度. Two automatic stations (one by the drinking-water source), accumulated-dose (TLD) points over
the streets, instantaneous gamma dose-rate points on a grid over the district, and points around the nuclear-technique
users (industrial X-ray inspection among the electronics dischargers).

Background levels follow what Jiangsu's stations report for the environmental gamma air-absorbed dose rate, about
60–110 nGy/h outdoors and higher indoors; the investigation level is the background mean plus three standard deviations.
"""

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from etl.sample.geo import xy_to_lonlat

OPERATOR = "新吴区生态环境监测站"
USERS = ("C39", "C38", "C34", "C35")  # electronics and machinery: X-ray inspection and flaw detection
GRID_SPACING = 3500.0  # metres between the instantaneous quality points
TLD_PER_STREET = 1
USERS_WATCHED = 6
# environment: (mean, sd) of the background, nGy/h; the ground under the probe
BACKGROUND = {"原野": (82.0, 9.0), "道路": (74.0, 8.0), "室内": (118.0, 12.0)}
GROUND = {"原野": ["草地", "裸土"], "道路": ["沥青地面", "水泥地面"], "室内": [None]}
DETECTOR = {"自动站": "高压电离室", "瞬时测量": "NaI(Tl)闪烁体", "累积剂量": "热释光剂量计"}
CSV_HEADERS = {"code": "点位编码", "name": "点位名称", "point_type": "点位类型", "purpose": "监测类别",
               "environment": "测量环境", "ground": "下垫面", "detector": "探测器类型", "height_m": "测量高度",
               "background": "本底均值", "investigation_level": "调查水平", "facility": "关联核技术利用单位",
               "operator": "运维单位", "street_code": "所属街道代码", "status": "运行状态", "established_on": "建站日期"}


def points(district: shapely.Polygon, streets: gpd.GeoDataFrame, sources: gpd.GeoDataFrame,
           by_the_source: shapely.Point, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """`by_the_source`: where the drinking-water source's automatic station stands (on its shore)."""
    inner = district.buffer(-100.0)
    plan = [("自动站", "辐射环境质量", "原野", by_the_source, "贡湖新安水源地辐射自动站"),
            ("自动站", "辐射环境质量", "原野", streets.geometry.values[0].point_on_surface(), "旺庄辐射自动站")]
    for code, name, area in zip(streets["code"], streets["name"], streets.geometry.values):
        plan += [("累积剂量", "辐射环境质量", "室内", area.point_on_surface(), f"{name}累积剂量点")] * TLD_PER_STREET
    minx, miny, maxx, maxy = inner.bounds
    gx, gy = np.meshgrid(np.arange(minx, maxx, GRID_SPACING), np.arange(miny, maxy, GRID_SPACING))
    jitter = rng.uniform(-0.3, 0.3, (2, gx.size)) * GRID_SPACING
    for x, y in zip(gx.ravel() + jitter[0], gy.ravel() + jitter[1]):
        if inner.contains(point := shapely.Point(x, y)):
            plan.append(("瞬时测量", "辐射环境质量", str(rng.choice(["原野", "道路"], p=[0.7, 0.3])), point, None))
    users = sources[sources["industry_code"].str.startswith(USERS)]
    for i in rng.choice(len(users), USERS_WATCHED, replace=False):
        at = users.geometry.values[i]
        angle = rng.uniform(0, 2 * np.pi)
        near = shapely.Point(at.x + 30 * np.cos(angle), at.y + 30 * np.sin(angle))
        plan.append(("瞬时测量", "核技术利用单位周围", "道路", near, users["name"].values[i]))
    return _table(plan, streets, rng)


def _table(plan: list, streets: gpd.GeoDataFrame, rng: np.random.Generator) -> gpd.GeoDataFrame:
    rows, geoms = [], []
    for n, (kind, purpose, environment, point, label) in enumerate(plan, start=1):
        street = int(np.argmin(shapely.distance(streets.geometry.values, point)))
        street_name = streets["name"].iloc[street]
        mean, sd = BACKGROUND[environment]
        background = float(rng.normal(mean, sd / 2))
        facility = label if purpose == "核技术利用单位周围" else None
        name = label if kind != "瞬时测量" else f"{facility}周围γ剂量率点" if facility else f"{street_name}γ剂量率点{n:02d}"
        rows.append({
            "code": f"XWFS-{n:03d}", "name": name, "point_type": kind, "purpose": purpose, "environment": environment,
            "ground": rng.choice(GROUND[environment]), "detector": DETECTOR[kind], "height_m": 1.0,
            "background": round(background, 1), "investigation_level": round(background + 3 * sd, 1),
            "facility": facility, "operator": OPERATOR, "street_code": streets["code"].iloc[street],
            "status": str(rng.choice(["运行", "维护"], p=[0.9, 0.1])),
            "established_on": f"{int(rng.integers(2010, 2025))}-{int(rng.integers(1, 13)):02d}-01",
        })
        geoms.append(point)
    return gpd.GeoDataFrame(rows, geometry=geoms)


def write_csv(table: gpd.GeoDataFrame, path: Path) -> None:
    """The bureau's list: UTF-8 with BOM, Chinese headers, CGCS2000 经度/纬度 to 1e-6°."""
    lon, lat = xy_to_lonlat(*shapely.get_coordinates(table.geometry.values).T)
    out = table[list(CSV_HEADERS)].rename(columns=CSV_HEADERS)
    out["经度"], out["纬度"] = np.round(lon, 6), np.round(lat, 6)
    out.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
