"""Drainage pipes (排水管道), checked as a network against the nodes already loaded.

Errors (quarantined with the reason): an end code that names no manhole, pump station, treatment plant
or outfall; a pipe from a node to itself; a pipe end farther than SNAP_M from the node it names.
Suspicious pipes are loaded with `flags` (semicolon-separated), which the ETL sets:

- `adverse_slope` (倒坡): a gravity pipe whose invert rises in the direction of flow;
- `dangling` (断头): the water it carries reaches a manhole that no pipe leaves;
- `gravity_cycle` (重力环): it lies on a cycle of gravity pipes, which water cannot follow.

The network checks see the whole layer as it will be after the load (the pipes already loaded and
not replaced, and the file's). The two-file form (a nodes file and a links file by node codes) is loaded
as the nodes (etl.jobs.drainage_nodes) and then the links file, which has no geometry: `locate` draws each
pipe straight between its nodes as loaded.
"""

import networkx as nx
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text

LAYERS = ("pipes",)
ALIASES = {"管段编号": "code", "管线编号": "code", "管道类型": "kind", "管类": "kind", "起点": "from_code",
           "起点编号": "from_code", "起点号": "from_code", "终点": "to_code", "终点编号": "to_code",
           "终点号": "to_code", "管径": "diameter_mm", "管材": "material", "起点管底高程": "from_invert_m",
           "终点管底高程": "to_invert_m", "起点埋深": "from_depth_m", "流向": "direction", "压力类型": "flow_type"}
SNAP_M = 0.5  # a pipe end must lie this near the node it names
NODE_LAYERS = ("manholes", "pump_stations", "treatment_plants", "outfalls")
NODES_SAID = "manhole, pump station, treatment plant or outfall"
ENDS = (("from_code", "起点编号 (from_code)"), ("to_code", "终点编号 (to_code)"))
M_PER_DEG = 111_320.0  # metres a degree of latitude (and of longitude at the equator), enough for SNAP_M checks


def _nodes(conn) -> pd.DataFrame:
    parts = " UNION ALL ".join(f"SELECT code, '{layer}' AS layer, ST_X(geom) AS x, ST_Y(geom) AS y "
                               f"FROM layers.{layer}" for layer in NODE_LAYERS)
    rows = conn.execute(text(parts)).all()
    return pd.DataFrame(rows, columns=["code", "layer", "x", "y"]).drop_duplicates("code").set_index("code")


def _gap_m(points: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx = (points[:, 0] - x) * np.cos(np.radians(y))
    return np.hypot(dx, points[:, 1] - y) * M_PER_DEG


def enrich(conn, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    nodes = _nodes(conn)
    rejects = {}
    for end, label in ENDS:
        unknown = ~frame[end].isin(nodes.index)
        for i in frame.index[unknown]:
            rejects.setdefault(i, f"pipe {frame.at[i, 'code']}: {label} {frame.at[i, end]!r} is not a known "
                                  f"{NODES_SAID}; load the nodes first")
    for i in frame.index[frame.from_code == frame.to_code]:
        rejects.setdefault(i, f"pipe {frame.at[i, 'code']} starts and ends at node {frame.at[i, 'from_code']!r}")
    known = frame.drop(index=list(rejects))
    lines = known.geom.to_numpy()
    for end, pick, label in (("from_code", 0, "start"), ("to_code", -1, "end")):
        points = np.array([shapely.get_coordinates(shapely.get_geometry(g, 0 if pick == 0 else -1))[pick]
                           for g in lines]).reshape(-1, 2)
        at = nodes.loc[known[end]]
        gap = _gap_m(points, at.x.to_numpy(), at.y.to_numpy())
        for i, metres, code in zip(known.index[gap > SNAP_M], gap[gap > SNAP_M], known[end][gap > SNAP_M]):
            rejects.setdefault(i, f"pipe {known.at[i, 'code']}: its {label} lies {metres:.1f} m from node {code!r}, "
                                  f"more than the {SNAP_M} m snapping tolerance; fix the line or the node code")
    frame = frame.drop(index=list(rejects))
    frame["flags"] = _flags(conn, frame, nodes)
    return frame, rejects


def _is(frame: pd.DataFrame, column: str, value: str) -> np.ndarray:
    """Which rows have `value` in `column` (a column not given: none)."""
    if column not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].astype(object).where(frame[column].notna(), "").eq(value).to_numpy(dtype=bool)


def _flows(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each pipe's upstream and downstream node codes (a two-way pipe: as drawn)."""
    backward = _is(frame, "direction", "反向")
    return (frame["from_code"].where(~backward, frame["to_code"]),
            frame["to_code"].where(~backward, frame["from_code"]))


def _flags(conn, frame: pd.DataFrame, nodes: pd.DataFrame) -> pd.Series:
    kept = pd.DataFrame(conn.execute(text(
        "SELECT code, from_code, to_code, direction, flow_type FROM layers.pipes WHERE NOT code = ANY(:codes)"),
        {"codes": list(frame.code)}).all(), columns=["code", "from_code", "to_code", "direction", "flow_type"])
    whole = pd.concat([kept, frame.reindex(columns=kept.columns)], ignore_index=True)
    up, down = _flows(whole)
    two_way = _is(whole, "direction", "双向")
    leaving = set(up) | set(down[two_way])
    manholes = set(nodes.index[nodes.layer == "manholes"])
    found: dict[str, list[str]] = {code: [] for code in frame.code}
    f_up, f_down = _flows(frame)
    gravity = _is(frame, "flow_type", "重力") & ~_is(frame, "direction", "双向")
    inverts = frame.reindex(columns=["from_invert_m", "to_invert_m"]).astype("float64")
    backward = _is(frame, "direction", "反向")
    rise = np.where(backward, inverts.from_invert_m - inverts.to_invert_m, inverts.to_invert_m - inverts.from_invert_m)
    for code in frame.code[gravity & (np.asarray(rise) > 0)]:
        found[code].append("adverse_slope")
    for code, target, both in zip(frame.code, f_down, _is(frame, "direction", "双向")):
        if not both and target in manholes and target not in leaving:
            found[code].append("dangling")
    g = nx.DiGraph()
    falls = _is(whole, "flow_type", "重力") & ~two_way
    g.add_edges_from(zip(up[falls], down[falls]))
    looped = set()
    for part in nx.strongly_connected_components(g):
        if len(part) > 1:
            looped |= part
    for code, a, b, falls_here in zip(frame.code, f_up, f_down, gravity):
        if falls_here and a in looped and b in looped:
            found[code].append("gravity_cycle")
    return pd.Series(["; ".join(v) or None for v in found.values()], index=frame.index, dtype=object)


def _code(value) -> str:
    return "" if value is None or pd.isna(value) else str(value).strip()


def locate(conn, frame: pd.DataFrame) -> tuple[pd.Series, dict]:
    """A links file (pipes by node codes, without geometry): each pipe the straight line from its start node to
    its end node as loaded; a pipe whose node is not known gets no line and the reason."""
    missing = [label for end, label in ENDS if end not in frame]
    if missing:
        raise ValueError(f"a pipes file without geometry joins its pipes by node codes, but it has no "
                         f"{' or '.join(missing)} column")
    nodes = _nodes(conn)
    a, b = frame.from_code.map(_code), frame.to_code.map(_code)
    drawn = (a.isin(nodes.index) & b.isin(nodes.index) & (a != b)).to_numpy()
    ends = np.stack([nodes.loc[a[drawn], ["x", "y"]].to_numpy(), nodes.loc[b[drawn], ["x", "y"]].to_numpy()], axis=1)
    lines = np.full(len(frame), None, dtype=object)
    lines[drawn] = shapely.multilinestrings(shapely.linestrings(ends), indices=np.arange(drawn.sum()))
    problems = {}
    for i in frame.index[~drawn]:
        name = _code(frame.at[i, "code"]) if "code" in frame else ""
        unknown = [(label, c) for (_, label), c in zip(ENDS, (a[i], b[i])) if c not in nodes.index]
        problems[i] = (f"pipe {name}: {unknown[0][0]} {unknown[0][1]!r} is not a known {NODES_SAID}; load the nodes "
                       "first" if unknown else f"pipe {name} starts and ends at node {a[i]!r}")
    return pd.Series(lines, index=frame.index, dtype=object), problems
