"""Traces on the drainage graph (layers.drainage_graph), by pgRouting: what drains to a feature
(upstream), where a feature drains to (downstream) and what loses its way out when a pump station or
a pipe fails (service area).

Each walk is two pgr_drivingDistance calls: one on the small graph of the graph's parts, finding the
parts up- or downstream of the start, and one on the edges of those parts alone, giving every node
reached with its distance along the network (metres, the shortest way). An edge is reached when the
water on it reaches the start (upstream: its downstream end is reached) or comes from the start
(downstream: its upstream end is). Plain functions, for the HTTP query and for other rooms (alerts'
upstream suspects): `upstream(conn, layer, fid)`, `downstream(...)`, `service_area(...)`.
"""

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

NODE_LAYERS = ("manholes", "pump_stations", "treatment_plants", "outfalls", "monitoring_stations", "pollution_sources")
EDGE_LAYERS = {"gravity": "pipes", "pressure": "pipes"}  # the feature layer of a graph edge, where it differs
STARTS = (*NODE_LAYERS, "pipes")
FAILING = ("pump_stations", "pipes")
EXITS = ("rivers", "river_points", "monitoring_stations", "treatment_plants")  # a way out: the river or a plant
UNBOUNDED = 1e15


@dataclass
class Reach:
    """What a trace reached: per layer, each feature's fid and its distance along the network (m)."""
    features: dict[str, dict[int, float]] = field(default_factory=dict)
    nodes: int = 0
    path: list[tuple[str, int, float]] = field(default_factory=list)  # downstream: (layer, fid, distance) in order
    outlet: tuple[str, int, float, int] | None = None  # downstream: the plant or outfall (layer, fid, m, node)


class NotOnNetwork(LookupError):
    """The feature is not on the drainage graph (not a network layer, or joined to nothing)."""


def _edges_sql(upstream: bool, graph: str) -> str:
    ends = "target AS source, source AS target" if upstream else "source, target"
    return f"SELECT id, {ends}, cost, reverse_cost FROM twin.{graph}"


async def _starts(conn: AsyncConnection, layer: str, fid: int, upstream: bool) -> list[int]:
    if layer == "pipes":
        row = (await conn.execute(text(
            "SELECT source, target, reverse_cost >= 0 AS two_way FROM twin.drainage_edge "
            "WHERE layer IN ('gravity', 'pressure') AND fid = :fid"), {"fid": fid})).first()
        if row is None:
            raise NotOnNetwork(f"pipe {fid} joins no two known nodes")
        return [row.source, row.target] if row.two_way else [row.source if upstream else row.target]
    nodes = (await conn.execute(text("SELECT id FROM twin.drainage_node WHERE layer = :layer AND fid = :fid"),
                                {"layer": layer, "fid": fid})).scalars().all()
    if not nodes:
        raise NotOnNetwork(f"{layer} feature {fid} is not on the drainage network")
    return list(nodes)


# pgr_drivingDistance from many starts is one walk from a virtual vertex 0 joined to each start by a
# zero-cost edge (its equicost mode can drop nodes when starts reach each other, in pgRouting 3.4).
FROM_ZERO = " UNION ALL SELECT -n, 0, s, 0, -1 FROM unnest(%{}$L::bigint[]) WITH ORDINALITY AS v (s, n)"


def _parts(starts: str) -> str:
    """SQL: the parts up- or downstream (by :part_sql) of the parts of the nodes in `starts` (an array)."""
    return (f"SELECT component FROM twin.drainage_node WHERE id = ANY({starts}) UNION "
            f"SELECT node FROM pgr_drivingDistance(format(:part_sql || '{FROM_ZERO.format(1)}', "
            f"ARRAY(SELECT component FROM twin.drainage_node WHERE id = ANY({starts}))), 0::bigint, :unbounded) "
            "WHERE node <> 0")


def _walked(starts: str, parts: str, distance: str, without: str = "''") -> str:
    """SQL: (node, distance_m) of the nodes reached from `starts` over the edges (by :edge_sql) of `parts`;
    `without` may exclude edges by %2$L (edge ids), %3$L and %4$L (node ids)."""
    return (f"SELECT w.node, w.agg_cost AS distance_m "
            f"FROM (SELECT {starts} AS starts WHERE cardinality({starts}) > 0) s "
            f"CROSS JOIN LATERAL pgr_drivingDistance(format(:edge_sql || ' WHERE component = ANY(%1$L::bigint[])' "
            f"|| {without} || '{FROM_ZERO.format(5)}', (SELECT array_agg(component) FROM {parts}), "
            f"CAST(:failed_edges AS bigint[]), CAST(:failed_nodes AS bigint[]), CAST(:failed_nodes AS bigint[]), "
            f"s.starts), 0::bigint, {distance}) w WHERE w.node <> 0")


def _reached(near: str, far: str) -> str:
    """SQL: the features reached, (kind, layer, fid, distance_m, node), from CTE walked: the nodes, and
    the edges by their end nearer the start (a two-way edge: either end; a feature may come twice)."""
    edges = ("SELECT 'edge', e.layer, e.fid, w.distance_m, NULL FROM walked w JOIN twin.drainage_edge e "
             "ON e.{end} = w.node {two_way} WHERE e.layer IN ('gravity', 'pressure', 'rivers')")
    return f"""
SELECT 'node' AS kind, n.layer, n.fid, w.distance_m, n.id AS node
FROM walked w JOIN twin.drainage_node n ON n.id = w.node WHERE n.fid IS NOT NULL AND w.distance_m <= :limit
UNION ALL {edges.format(end=near, two_way="")}
UNION ALL {edges.format(end=far, two_way="AND e.reverse_cost >= 0")}
UNION ALL
SELECT 'gate', 'gates', g.fid, w.distance_m, NULL FROM layers.gates g
JOIN twin.drainage_node n ON n.code = g.node_code AND n.layer IN ('manholes', 'pump_stations', 'treatment_plants',
                                                                  'outfalls')
JOIN walked w ON w.node = n.id WHERE w.distance_m <= :limit
UNION ALL
SELECT 'gate', 'gates', g.fid, w.distance_m, NULL FROM layers.gates g JOIN layers.rivers r ON r.code = g.river_code
JOIN twin.drainage_edge e ON e.layer = 'rivers' AND e.fid = r.fid JOIN walked w ON w.node = e.{near}
WHERE w.distance_m < :limit
"""


STARTS_PARAM = "CAST(:starts AS bigint[])"


async def _trace(conn: AsyncConnection, starts: list[int], upstream: bool, distance: float | None) -> Reach:
    near, far = ("target", "source") if upstream else ("source", "target")
    limit = UNBOUNDED if distance is None else distance
    rows = (await conn.execute(text(
        f"WITH parts AS ({_parts(STARTS_PARAM)}), walked AS ({_walked(STARTS_PARAM, 'parts', ':distance')}) "
        + _reached(near, far)), {
        "starts": starts, "part_sql": _edges_sql(upstream, "drainage_component_edge"),
        "edge_sql": _edges_sql(upstream, "drainage_edge"), "unbounded": UNBOUNDED, "distance": limit,
        "limit": limit, "failed_edges": [], "failed_nodes": []})).all()
    reach = Reach()
    for kind, layer, fid, metres, node in rows:
        if kind == "node":
            reach.nodes += 1
            reach.features.setdefault(layer, {})[fid] = metres
            if not upstream and layer in ("treatment_plants", "outfalls") and node not in starts \
                    and (reach.outlet is None or (metres, node) < (reach.outlet[2], reach.outlet[3])):
                reach.outlet = (layer, fid, metres, node)
        elif kind == "gate" or metres < limit or metres == 0:  # (gates come filtered)
            mine = reach.features.setdefault(EDGE_LAYERS.get(layer, layer), {})
            mine[fid] = min(metres, mine.get(fid, metres))
    return reach


async def upstream(conn: AsyncConnection, layer: str, fid: int, distance: float | None = None) -> Reach:
    """Everything that drains to the feature (up to `distance` metres along the network): pipes, reaches,
    manholes, pump stations, plants, outfalls, stations, pollution sources, gates."""
    return await _trace(conn, await _starts(conn, layer, fid, upstream=True), True, distance)


async def downstream(conn: AsyncConnection, layer: str, fid: int, distance: float | None = None) -> Reach:
    """Everything the feature drains through, and its shortest path to the nearest plant or outfall."""
    starts = await _starts(conn, layer, fid, upstream=False)
    reach = await _trace(conn, starts, False, distance)
    if reach.outlet is None:
        return reach
    steps = (await conn.execute(text(
        f"WITH parts AS ({_parts(STARTS_PARAM)}) "
        "SELECT e.layer, e.fid, d.agg_cost + d.cost FROM pgr_dijkstra("
        "  format(:edge_sql || ' WHERE component = ANY(%L::bigint[])', (SELECT array_agg(component) FROM parts)), "
        f"  {STARTS_PARAM}, CAST(:outlet AS bigint)) d JOIN twin.drainage_edge e ON e.id = d.edge "
        "ORDER BY d.path_seq"), {"part_sql": _edges_sql(False, "drainage_component_edge"), "unbounded": UNBOUNDED,
                                 "edge_sql": _edges_sql(False, "drainage_edge"), "starts": starts,
                                 "outlet": reach.outlet[3]})).all()
    reach.path = [(EDGE_LAYERS.get(layer, layer), fid, metres) for layer, fid, metres in steps]
    return reach


_LOST = f"""
WITH parts AS ({_parts(STARTS_PARAM)}),
up AS ({_walked(STARTS_PARAM, 'parts', ':unbounded')}),
ups AS (SELECT DISTINCT n.component FROM up JOIN twin.drainage_node n ON n.id = up.node),
region AS (SELECT component FROM ups UNION SELECT node FROM pgr_drivingDistance(
           format(:down_part_sql || '{FROM_ZERO.format(1)}', ARRAY(SELECT component FROM ups)), 0::bigint, :unbounded)
           WHERE node <> 0),
exits AS (SELECT ARRAY(SELECT id FROM twin.drainage_node WHERE layer = ANY(CAST(:exits AS text[]))
                       AND component IN (SELECT component FROM region)) AS ids),
way_out AS ({_walked('(SELECT ids FROM exits)', 'region', ':unbounded', ':without')}),
lost AS (SELECT node, distance_m FROM up WHERE node NOT IN (SELECT node FROM way_out)
         AND NOT node = ANY(CAST(:failed_nodes AS bigint[])))
SELECT 'node' AS kind, n.layer, n.fid, l.distance_m FROM lost l JOIN twin.drainage_node n ON n.id = l.node
WHERE n.fid IS NOT NULL
UNION ALL
SELECT 'edge', 'pipes', e.fid, l.distance_m FROM lost l JOIN twin.drainage_edge e ON e.source = l.node
WHERE e.layer IN ('gravity', 'pressure') AND NOT e.id = ANY(CAST(:failed_edges AS bigint[]))
UNION ALL
SELECT 'edge', 'pipes', e.fid, l.distance_m FROM lost l JOIN twin.drainage_edge e ON e.target = l.node
WHERE e.layer IN ('gravity', 'pressure') AND e.reverse_cost >= 0 AND NOT e.id = ANY(CAST(:failed_edges AS bigint[]))
"""


async def service_area(conn: AsyncConnection, layer: str, fid: int) -> Reach:
    """What loses its way out (to a river or a treatment plant) when the pump station or pipe fails:
    every node upstream of it with no other way out, and the pipes leaving those nodes. Distances are
    along the network to the failing feature."""
    if layer not in FAILING:
        raise NotOnNetwork(f"a service area is of a pump station or a pipe, not of {layer}")
    starts = await _starts(conn, layer, fid, upstream=True)
    if layer == "pipes":
        failed_edges = list((await conn.execute(text(
            "SELECT id FROM twin.drainage_edge WHERE layer IN ('gravity', 'pressure') AND fid = :fid"),
            {"fid": fid})).scalars())
        failed_nodes: list[int] = []
    else:
        failed_edges, failed_nodes = [], starts
    rows = (await conn.execute(text(_LOST), {
        "starts": starts, "part_sql": _edges_sql(True, "drainage_component_edge"),
        "down_part_sql": _edges_sql(False, "drainage_component_edge"), "edge_sql": _edges_sql(True, "drainage_edge"),
        "unbounded": UNBOUNDED, "exits": list(EXITS), "failed_nodes": failed_nodes, "failed_edges": failed_edges,
        "without": " AND NOT id = ANY(%2$L::bigint[]) AND NOT source = ANY(%3$L::bigint[]) "
                   "AND NOT target = ANY(%4$L::bigint[])"})).all()
    reach = Reach()
    for kind, feature_layer, feature_fid, metres in rows:
        reach.nodes += kind == "node"
        mine = reach.features.setdefault(feature_layer, {})
        mine[feature_fid] = min(metres, mine.get(feature_fid, metres))
    return reach
