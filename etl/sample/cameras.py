"""Video cameras (视频监控点位) with GB/T 28181-2016 device ids, handed over the way a city-management platform
exports them: a CSV with the platform's column names (国标编码, 设备名称 …) and GCJ-02 coordinates; and their
streams, a second CSV kept apart because the stream addresses are private.

Cameras stand at the crossings of the main roads (traffic and public security), along the other roads (city
management), on the rivers at their bridges and mouths (river patrol), at key dischargers (environment) and in parks.
"""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from etl.offset import wgs84_to_gcj02
from etl.sample.geo import xy_to_lonlat
from etl.sample.real import DISTRICT_CODE

CENTRE = f"{DISTRICT_CODE}00"  # 中心编码: the district and its video centre (基层单位 00)
PLATFORM_ID = f"{CENTRE}082006000001"  # the district platform's SIP id: 行业 08, type 200 (中心信令控制服务器), 政务网
# purpose: (行业编码, 网络标识, network name, owner, share of cameras)
PURPOSES = {
    "治安": ("00", "0", "视频专网", "无锡市公安局新吴分局", 0.25),
    "交通": ("04", "0", "视频专网", "无锡市公安局交通警察支队新吴大队", 0.15),
    "城市管理": ("08", "6", "政务外网", "新吴区城市管理局", 0.30),
    "河道": ("08", "6", "政务外网", "新吴区水利局", 0.12),
    "环保": ("09", "7", "互联网", "新吴区生态环境局", 0.10),
    "园林": ("08", "6", "政务外网", "新吴区园林绿化管理所", 0.08),
}
TYPES = {"治安": (["球机", "枪机", "全景"], [0.5, 0.35, 0.15]), "交通": (["枪机", "球机"], [0.7, 0.3]),
         "城市管理": (["球机", "枪机", "半球"], [0.5, 0.4, 0.1]), "河道": (["球机", "枪机", "热成像"], [0.6, 0.3, 0.1]),
         "环保": (["枪机", "球机"], [0.6, 0.4]), "园林": (["球机", "半球"], [0.7, 0.3])}
STATUS = (["在线", "离线", "故障"], [0.92, 0.06, 0.02])
CSV_HEADERS = {"device_id": "国标编码", "name": "设备名称", "camera_type": "设备类型", "ptz": "云台", "purpose": "用途",
               "network": "接入网络", "resolution": "分辨率", "height_m": "杆高", "status": "状态",
               "owner_unit": "建设单位", "street_code": "所属街道代码", "address": "安装位置", "installed_on": "安装日期"}
STREAM_HEADERS = {"device_id": "国标编码", "protocol": "取流协议", "stream_url": "主码流地址",
                  "sub_stream_url": "子码流地址", "platform_id": "上级平台编码"}


def cameras(n: int, roads: gpd.GeoDataFrame, reaches: gpd.GeoDataFrame, sources: gpd.GeoDataFrame,
            parks: gpd.GeoDataFrame, streets: gpd.GeoDataFrame, district: shapely.Polygon,
            rng: np.random.Generator) -> gpd.GeoDataFrame:
    counts = {p: int(round(n * share)) for p, (*_, share) in PURPOSES.items()}
    places = {"治安": _crossings(roads, ("快速路", "主干路"), rng), "交通": _crossings(roads, ("快速路", "主干路"), rng),
              "城市管理": _along(roads[roads["road_class"].isin(["次干路", "支路"])], rng, 2 * counts["城市管理"]),
              "河道": _along(reaches[reaches["river_class"] != "沟渠"], rng, 2 * counts["河道"]),
              "环保": _near(sources[sources["key_unit"]], rng, 2 * counts["环保"]),
              "园林": _near(parks[parks["name"].notna()], rng, 2 * counts["园林"])}
    inner = district.buffer(-20.0)  # the canal runs on beyond the district; points near the border may fall out
    rows, points = [], []
    for purpose, (sector, network_digit, network, owner, _) in PURPOSES.items():
        inside = [(point, where) for point, where in places[purpose] if inner.contains(point)]
        for point, where in inside[:counts[purpose]]:
            kinds, weights = TYPES[purpose]
            kind = str(rng.choice(kinds, p=weights))
            serial = len(rows) + 1
            street = int(np.argmin(shapely.distance(streets.geometry.values, point)))
            rows.append({
                "device_id": f"{CENTRE}{sector}{'131' if kind == '热成像' else '132'}{network_digit}{serial:06d}",
                "name": f"{where}{purpose}监控{serial:04d}", "camera_type": kind, "ptz": kind == "球机",
                "purpose": purpose, "network": network, "resolution": str(rng.choice(["1080P", "400万", "800万"],
                                                                                      p=[0.3, 0.55, 0.15])),
                "height_m": round(float(rng.uniform(3.5, 8.0)), 1), "status": str(rng.choice(STATUS[0], p=STATUS[1])),
                "owner_unit": owner, "street_code": streets["code"].iloc[street], "address": f"新吴区{where}",
                "installed_on": f"{int(rng.integers(2015, 2026))}-{int(rng.integers(1, 13)):02d}-01",
            })
            points.append(point)
    table = gpd.GeoDataFrame(rows, geometry=points)
    table["installed_on"] = pd.to_datetime(table["installed_on"]).astype("datetime64[ms]")
    return table


def streams(table: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The stream of each camera: RTSP from the platform's media server, or for the police's own GB/T 28181 devices
    the media server's relay of the device's channel."""
    rows = []
    for i, (device, network) in enumerate(zip(table["device_id"], table["network"])):
        if network == "视频专网":
            rows.append({"protocol": "GB28181", "stream_url": f"rtsp://10.32.0.10:554/rtp/{device}_{device}",
                         "sub_stream_url": None, "platform_id": PLATFORM_ID})
        else:
            host = f"10.51.{i // 250 + 1}.{i % 250 + 2}"
            rows.append({"protocol": "RTSP", "stream_url": f"rtsp://{host}:554/Streaming/Channels/101",
                         "sub_stream_url": f"rtsp://{host}:554/Streaming/Channels/102", "platform_id": PLATFORM_ID})
    frame = pd.DataFrame(rows).assign(device_id=table["device_id"].values)
    return gpd.GeoDataFrame(frame, geometry=table.geometry.values)


def write_csv(table: gpd.GeoDataFrame, headers: dict[str, str], path: Path) -> None:
    """The platform's export: UTF-8 with BOM, its own column names, GCJ-02 经度/纬度."""
    xs, ys = shapely.get_coordinates(table.geometry.values).T
    lon, lat = wgs84_to_gcj02(*xy_to_lonlat(xs, ys))
    out = table[list(headers)].rename(columns=headers)
    if "云台" in out:
        out["云台"] = np.where(table["ptz"], "是", "否")
    if "安装日期" in out:
        out["安装日期"] = table["installed_on"].dt.strftime("%Y-%m-%d")
    out["经度"], out["纬度"] = np.round(lon, 6), np.round(lat, 6)
    out.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def _crossings(roads: gpd.GeoDataFrame, classes: tuple[str, ...], rng) -> list[tuple[shapely.Point, str]]:
    """The crossings of the roads of `classes`, each named by its two roads, in random order."""
    chosen = roads[roads["road_class"].isin(classes)]
    lines, names = chosen.geometry.values, chosen["name"].values
    first, second = shapely.STRtree(lines).query(lines, predicate="intersects")
    found = []
    for a, b in zip(first, second):
        if a < b and names[a] != names[b]:
            for point in shapely.get_parts(shapely.intersection(lines[a], lines[b])):
                if point.geom_type == "Point":
                    found.append((point, f"{names[a]}与{names[b]}交叉口"))
    order = rng.permutation(len(found))
    return [found[i] for i in order]


def _along(lines: gpd.GeoDataFrame, rng, n: int) -> list[tuple[shapely.Point, str]]:
    picks = rng.choice(len(lines), n, p=lines.length.values / lines.length.sum())
    return [(lines.geometry.values[i].interpolate(rng.uniform(0, 1), normalized=True), str(lines["name"].values[i]))
            for i in picks]


def _near(features: gpd.GeoDataFrame, rng, n: int) -> list[tuple[shapely.Point, str]]:
    picks = rng.choice(len(features), n, replace=n > len(features))
    out = []
    for i in picks:
        centre = shapely.point_on_surface(features.geometry.values[i])
        angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(5, 25)
        out.append((shapely.Point(centre.x + distance * np.cos(angle), centre.y + distance * np.sin(angle)),
                    str(features["name"].values[i])))
    return out
