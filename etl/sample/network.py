"""A plausible drainage network (厂站网) under the sample roads, as a separate system: sewers and storm
drains side by side.

The roads are noded at their crossings and cut into manhole-to-manhole segments, sized so that the
two systems together hold about the number of pipes asked for. Sewage: each cell of the district
drains to a pump station at its lowest road node (by the elevation model); every manhole drains
along the shortest way to it, gravity sewers falling with about 1.5‰ from the station's sump up to
the catchment's edge (where that would lie deeper than MAX_DEPTH_M, under a hill, they follow the
ground). Pump stations send force mains (压力管) to the nearer of two treatment plants, two
neighbouring stations share a two-way interconnector (a cycle in the pressure mains), and each plant
discharges through an 尾水 outfall onto its nearest reach. Storm drains run beside the sewers to the
nearest outfall where a road comes near a river. Manholes carry the code of the 污水/雨水井盖 city
component nearest to them, where one lies within COVER_M. Pipes join only manholes of one catchment,
so the gravity network is a forest of catchments (with some loops inside each).
"""

from dataclasses import dataclass

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import rasterio
import shapely

from etl.sample.geo import to_degrees, xy

CELL_M = 2500.0  # one sewage pump station per cell of this size that has roads
SLOPE = 0.0015
SUMP_DEPTH_M = 5.0
MAX_DEPTH_M = 8.0
STORM_OFFSET_M = 2.5  # storm drains lie this far beside the sewers
OUTFALL_REACH_M = 60.0  # a road node this near a reach gets a storm outfall (one per OUTFALL_CELL_M cell)
OUTFALL_CELL_M = 600.0
COVER_M = 15.0
PLANTS = [("XWWS01", "新城污水处理厂", 120.395, 31.478, 150000.0), ("XWWS02", "梅村污水处理厂", 120.478, 31.515, 100000.0)]
MATERIALS = {"污水": ["HDPE", "钢筋混凝土", "球墨铸铁"], "雨水": ["钢筋混凝土", "HDPE"]}


@dataclass
class Network:
    pipes: gpd.GeoDataFrame
    manholes: gpd.GeoDataFrame
    pump_stations: gpd.GeoDataFrame
    treatment_plants: gpd.GeoDataFrame
    outfalls: gpd.GeoDataFrame
    gates: gpd.GeoDataFrame


@dataclass
class _Roads:
    xy: np.ndarray  # node coordinates, metres
    edges: np.ndarray  # (a, b) node index pairs
    length: np.ndarray


def network(roads: gpd.GeoDataFrame, reaches: gpd.GeoDataFrame, elevation, covers: gpd.GeoDataFrame,
            pipes: int, rng: np.random.Generator) -> Network:
    """Everything in the metric frame; `elevation` the sample DEM's path; `covers` the city components
    (metric) whose class_name is 污水井盖 or 雨水井盖."""
    lines = shapely.get_parts(shapely.union_all(shapely.get_parts(roads.geometry.values)))
    total = float(shapely.length(lines).sum())
    graph = _segments(lines, spacing=max(2.0 * total / pipes, 1.0))
    ground = _ground(elevation, graph.xy)
    plants = _plants(rng)
    sewer_roots = _low_points(graph, ground)
    pumps = gpd.GeoDataFrame({
        "code": [f"XWBZ{i:03d}" for i in range(1, len(sewer_roots) + 1)],
        "name": [f"新吴{i}号污水泵站" for i in range(1, len(sewer_roots) + 1)],
        "kind": "污水", "capacity_m3h": rng.choice([800.0, 1500.0, 3000.0, 5000.0], len(sewer_roots)),
        "status": "运行"}, geometry=shapely.points(graph.xy[sewer_roots]))
    sewage = _system(graph, ground, sewer_roots, dict(zip(sewer_roots, pumps.code)), "污水", "XWW", rng)
    plant_of = shapely.STRtree(plants.geometry.values).query_nearest(pumps.geometry.values, all_matches=False)[1]
    force = _force_mains(pumps, plants, plant_of)

    storm_xy = graph.xy + STORM_OFFSET_M
    outfall_nodes, outfall_points, outfall_reach = _storm_outlets(graph, reaches)
    storm_graph = _Roads(storm_xy, graph.edges, graph.length)
    storm_outfalls = gpd.GeoDataFrame({
        "code": [f"XWPK{i:04d}" for i in range(1, len(outfall_nodes) + 1)], "name": None, "kind": "雨水",
        "river_code": reaches.code.values[outfall_reach], "diameter_mm": 800.0}, geometry=outfall_points)
    storm = _system(storm_graph, ground, outfall_nodes, None, "雨水", "XWY", rng)
    links = _outfall_links(storm_graph, storm, outfall_nodes, storm_outfalls)
    plant_outfalls, plant_links = _plant_outfalls(plants, reaches)
    outfalls = gpd.GeoDataFrame(_concat([storm_outfalls, plant_outfalls]))
    pipes_table = gpd.GeoDataFrame(_concat([sewage.pipes, force, storm.pipes, links, plant_links]))
    manholes = gpd.GeoDataFrame(_concat([sewage.manholes, storm.manholes]))
    manholes["component_code"] = _covers(manholes, covers)
    return Network(pipes_table, manholes, pumps, plants, outfalls, _gates(storm_outfalls, reaches))


def _concat(frames):
    return pd.concat(frames, ignore_index=True)


def _lines(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Two-point MultiLineStrings from start and end coordinates."""
    lines = shapely.linestrings(np.stack([starts, ends], axis=1))
    return shapely.multilinestrings(lines, indices=np.arange(len(starts)))


def _segments(lines: np.ndarray, spacing: float) -> _Roads:
    """Road lines (noded) cut into about `spacing`-metre segments; shared ends become one node."""
    counts = np.maximum(np.ceil(shapely.length(lines) / spacing).astype(int), 1)
    owner = np.repeat(np.arange(len(lines)), counts + 1)
    starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])
    fraction = (np.arange(len(owner)) - np.repeat(starts, counts + 1)) / np.repeat(counts, counts + 1)
    points = shapely.get_coordinates(shapely.line_interpolate_point(lines[owner], fraction, normalized=True))
    _, node = np.unique(np.round(points, 2), axis=0, return_inverse=True)
    node = node.ravel()
    first = np.full(node.max() + 1, -1)
    first[node[::-1]] = np.arange(len(node))[::-1]
    ends = np.ones(len(owner), dtype=bool)
    ends[starts] = False  # a point pairs with the one before it on the same line
    a, b = node[np.flatnonzero(ends) - 1], node[ends]
    keep = a != b
    coords = points[first]
    length = np.hypot(*(coords[a[keep]] - coords[b[keep]]).T)
    return _Roads(coords, np.column_stack([a[keep], b[keep]]), length)


def _ground(elevation, points: np.ndarray) -> np.ndarray:
    with rasterio.open(elevation) as dem:
        heights = dem.read(1)
        lonlat = shapely.get_coordinates(to_degrees(shapely.points(points)))
        rows, cols = rasterio.transform.rowcol(dem.transform, lonlat[:, 0], lonlat[:, 1])
        rows = np.clip(np.asarray(rows), 0, dem.height - 1)
        cols = np.clip(np.asarray(cols), 0, dem.width - 1)
        z = heights[rows, cols].astype(float)
        z[z == dem.nodata] = np.nan
    return np.where(np.isnan(z), np.nanmedian(z), z)


def _low_points(graph: _Roads, ground: np.ndarray) -> list[int]:
    """The lowest road node of each CELL_M cell (only nodes with a road on them)."""
    used = np.unique(graph.edges)
    cell = np.floor(graph.xy[used] / CELL_M).astype(int)
    order = np.lexsort((ground[used], cell[:, 1], cell[:, 0]))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (np.diff(cell[order], axis=0) != 0).any(axis=1)
    return sorted(int(n) for n in used[order[first]])


@dataclass
class _System:
    pipes: gpd.GeoDataFrame
    manholes: gpd.GeoDataFrame
    code: dict[int, str]  # road node → node code


def _system(graph: _Roads, ground: np.ndarray, roots: list[int], root_codes: dict[int, str] | None, kind: str,
            prefix: str, rng: np.random.Generator) -> _System:
    """Gravity pipes along the roads, each manhole draining towards its nearest root (shortest way)."""
    g = nx.Graph()
    g.add_weighted_edges_from(zip(graph.edges[:, 0].tolist(), graph.edges[:, 1].tolist(), graph.length.tolist()))
    source = -1
    g.add_weighted_edges_from((source, r, 0.0) for r in roots)
    pred, dist = nx.dijkstra_predecessor_and_distance(g, source)
    order = sorted((n for n in dist if n != source), key=dist.get)
    basin = {}
    for n in order:
        parent = min(pred[n])
        basin[n] = n if parent == source else basin[parent]
    a, b = graph.edges[:, 0], graph.edges[:, 1]
    reached = np.array([n in basin for n in a]) & np.array([n in basin for n in b])
    same = reached.copy()
    same[reached] = np.array([basin[i] == basin[j] for i, j in zip(a[reached], b[reached])])
    da = np.array([dist.get(n, np.nan) for n in a])
    db = np.array([dist.get(n, np.nan) for n in b])
    keep = same & (da != db)
    up = np.where(da > db, a, b)[keep]
    down = np.where(da > db, b, a)[keep]
    upstream_count = dict.fromkeys(order, 1)
    for n in reversed(order):
        parent = min(pred[n])
        if parent != source:
            upstream_count[parent] += upstream_count[n]
    nodes = sorted(set(up.tolist()) | set(down.tolist()))
    codes = {}
    for n in nodes:
        codes[n] = root_codes[n] if root_codes and n in root_codes else f"{prefix}{len(codes) + 1:06d}"
    invert = {}
    for n in order:  # from the roots up: each manhole above the one it drains to, at most MAX_DEPTH_M deep
        parent = min(pred[n])
        invert[n] = ground[n] - SUMP_DEPTH_M if parent == source else \
            max(invert[parent] + SLOPE * (dist[n] - dist[parent]), ground[n] - MAX_DEPTH_M)
    flipped = rng.random(len(up)) < 0.05  # drawn against the flow, as surveys sometimes are
    starts = np.where(flipped, down, up)
    ends = np.where(flipped, up, down)
    size = np.array([upstream_count[n] for n in up])
    diameter = np.select([size < 20, size < 200, size < 2000], [300.0, 500.0, 800.0], 1200.0)
    pipes = gpd.GeoDataFrame({
        "code": [f"{prefix}G{i:07d}" for i in range(1, len(up) + 1)], "kind": kind, "flow_type": "重力",
        "from_code": [codes[n] for n in starts], "to_code": [codes[n] for n in ends],
        "direction": np.where(flipped, "反向", "正向"), "diameter_mm": diameter,
        "material": rng.choice(MATERIALS[kind], len(up)),
        "from_invert_m": np.round([invert[n] for n in starts], 3),
        "to_invert_m": np.round([invert[n] for n in ends], 3),
        "flags": None}, geometry=_lines(graph.xy[starts], graph.xy[ends]))
    holes = [n for n in nodes if not (root_codes and n in root_codes)]
    manholes = gpd.GeoDataFrame({
        "code": [codes[n] for n in holes], "kind": kind, "ground_m": np.round(ground[holes], 2),
        "depth_m": np.round([max(ground[n] - invert[n], 0.8) for n in holes], 2), "component_code": None},
        geometry=shapely.points(graph.xy[holes]))
    return _System(pipes, manholes, codes)


def _plants(rng: np.random.Generator) -> gpd.GeoDataFrame:
    sites = np.array([xy(lon, lat) for _, _, lon, lat, _ in PLANTS]) + rng.uniform(-150.0, 150.0, (len(PLANTS), 2))
    points = shapely.points(sites)
    return gpd.GeoDataFrame({"code": [p[0] for p in PLANTS], "name": [p[1] for p in PLANTS],
                             "capacity_m3d": [p[4] for p in PLANTS], "standard": "GB 18918 一级A"}, geometry=points)


def _force_mains(pumps: gpd.GeoDataFrame, plants: gpd.GeoDataFrame, plant_of: np.ndarray) -> gpd.GeoDataFrame:
    starts = shapely.get_coordinates(pumps.geometry.values)
    ends = shapely.get_coordinates(plants.geometry.values)[plant_of]
    rows = {"code": [f"XWYL{i:04d}" for i in range(1, len(pumps) + 1)], "from_code": list(pumps.code),
            "to_code": list(plants.code.values[plant_of]), "direction": "正向"}
    lines = list(_lines(starts, ends))
    gaps = np.hypot(*(starts[:, None] - starts[None]).transpose(2, 0, 1)) + np.eye(len(starts)) * 1e12
    i, j = np.unravel_index(np.argmin(gaps), gaps.shape)
    rows["code"].append(f"XWYL{len(pumps) + 1:04d}")
    rows["from_code"].append(pumps.code.iloc[i])
    rows["to_code"].append(pumps.code.iloc[j])
    lines.append(shapely.MultiLineString([[starts[i], starts[j]]]))
    frame = gpd.GeoDataFrame(rows, geometry=lines)
    frame.loc[frame.index[-1], "direction"] = "双向"  # the interconnector: either station can pump through it
    frame["kind"], frame["flow_type"], frame["diameter_mm"], frame["material"] = "污水", "压力", 600.0, "球墨铸铁"
    return frame


def _storm_outlets(graph: _Roads, reaches: gpd.GeoDataFrame) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Road nodes near a reach (one per OUTFALL_CELL_M cell), the outfall points on the reach, their reach."""
    used = np.unique(graph.edges)
    points = shapely.points(graph.xy[used])
    tree = shapely.STRtree(reaches.geometry.values)
    hit, reach = tree.query_nearest(points, max_distance=OUTFALL_REACH_M, all_matches=False)
    cell = np.floor(graph.xy[used[hit]] / OUTFALL_CELL_M).astype(int)
    _, first = np.unique(cell, axis=0, return_index=True)
    first = np.sort(first)
    nodes, reach = used[hit[first]], reach[first]
    on_river = shapely.line_interpolate_point(reaches.geometry.values[reach],
                                              shapely.line_locate_point(reaches.geometry.values[reach],
                                                                        shapely.points(graph.xy[nodes])))
    return nodes.tolist(), on_river, reach


def _outfall_links(graph: _Roads, storm: _System, nodes: list[int], outfalls: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    drained = [n in storm.code for n in nodes]
    starts = graph.xy[nodes][drained]
    ends = shapely.get_coordinates(outfalls.geometry.values)[drained]
    return gpd.GeoDataFrame({
        "code": [f"XWYC{i:05d}" for i in range(1, int(np.sum(drained)) + 1)], "kind": "雨水", "flow_type": "重力",
        "from_code": [storm.code[n] for n, d in zip(nodes, drained) if d], "to_code": list(outfalls.code[drained]),
        "direction": "正向", "diameter_mm": 800.0, "material": "钢筋混凝土"},
        geometry=_lines(starts, ends))


def _plant_outfalls(plants: gpd.GeoDataFrame, reaches: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    reach = shapely.STRtree(reaches.geometry.values).query_nearest(plants.geometry.values, all_matches=False)[1]
    lines = reaches.geometry.values[reach]
    points = shapely.line_interpolate_point(lines, shapely.line_locate_point(lines, plants.geometry.values))
    codes = [f"{c}-PK" for c in plants.code]
    outfalls = gpd.GeoDataFrame({"code": codes, "name": [f"{n}尾水排口" for n in plants.name], "kind": "尾水",
                                 "river_code": reaches.code.values[reach], "diameter_mm": 1200.0}, geometry=points)
    links = gpd.GeoDataFrame({
        "code": [f"{c}-WS" for c in plants.code], "kind": "污水", "flow_type": "重力", "from_code": list(plants.code),
        "to_code": codes, "direction": "正向", "diameter_mm": 1200.0, "material": "钢筋混凝土"},
        geometry=_lines(shapely.get_coordinates(plants.geometry.values), shapely.get_coordinates(points)))
    return outfalls, links


def _covers(manholes: gpd.GeoDataFrame, covers: gpd.GeoDataFrame) -> list:
    """Each manhole's 井盖 component code: the nearest cover of its kind within COVER_M, each cover used once."""
    found = np.full(len(manholes), None, dtype=object)
    for kind, name in (("污水", "污水井盖"), ("雨水", "雨水井盖")):
        mine = np.flatnonzero(manholes.kind.values == kind)
        theirs = covers[covers.class_name == name]
        if not len(mine) or not len(theirs):
            continue
        cover, hole = shapely.STRtree(manholes.geometry.values[mine]).query_nearest(
            theirs.geometry.values, max_distance=COVER_M, all_matches=False)
        _, once = np.unique(hole, return_index=True)  # one cover per manhole: the first that claims it
        found[mine[hole[once]]] = theirs.code.values[cover[once]]
    return list(found)


def _gates(outfalls: gpd.GeoDataFrame, reaches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A 拍门 on every fifth storm outfall; a 节制闸 where each 骨干河道 meets the canal."""
    flapped = outfalls.iloc[::5]
    canal = shapely.union_all(reaches.geometry.values[reaches.river_class.values == "流域性河道"])
    trunks = reaches[reaches.river_class == "骨干河道"]
    ends = shapely.points([shapely.get_coordinates(g)[-1] for g in trunks.geometry.values])
    at_canal = shapely.dwithin(ends, canal, 1.0)
    mouths, ends = trunks[at_canal], ends[at_canal]
    return gpd.GeoDataFrame({
        "code": [f"XWZ{i:04d}" for i in range(1, len(flapped) + len(mouths) + 1)],
        "name": [f"{c}拍门" for c in flapped.code] + [f"{n}节制闸" for n in mouths.name],
        "gate_type": ["拍门"] * len(flapped) + ["节制闸"] * len(mouths),
        "node_code": list(flapped.code) + [None] * len(mouths),
        "river_code": list(flapped.river_code) + list(mouths.code)},
        geometry=list(flapped.geometry.values) + list(ends))
