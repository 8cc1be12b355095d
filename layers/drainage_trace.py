"""Traces on the drainage graph (layers.drainage_graph), by pgRouting: what drains to a feature
(upstream), where a feature drains to (downstream) and what loses its way out when a pump station or
a pipe fails (service area).

Each walk is two pgr_drivingDistance calls: one on the small graph of the graph's parts, finding the
parts up- or downstream of the start, and one on the edges of those parts alone, giving every node
reached with its distance along the network (metres, the shortest way). An edge is reached when the
water on it reaches the start (upstream: its downstream end is reached) or comes from the start
(downstream: its upstream end is). The features reached are read off the node ids (drainage_layers.node_id)
and the parts' edges, hash-joined to the walk: one index probe per node reached cost more than the walk.

Plain functions, for the HTTP query and for other rooms (alerts' upstream suspects): `upstream(conn,
layer, fid)`, `downstream(...)`, `service_area(...)`; `network=` a graph of the past (drainage_graph.build_at).
"""

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from layers import drainage_layers
from layers.drainage_layers import EDGE_ROLES, ID_BITS, NAMED, NODE_ROLES, Network

STARTS = (*NODE_ROLES, "pipes")  # the roles a trace starts from
FAILING = ("pump_stations", "pipes")  # the roles a service area is of
EXITS = ("rivers", "river_points", "stations", "treatment_plants")  # a way out: the river or a plant
UNBOUNDED = 1e15


@dataclass
class Reach:
    """What a trace reached: per layer id, each feature's fid and its distance along the network (m)."""
    features: dict[str, dict[int, float]] = field(default_factory=dict)
    nodes: int = 0
    layers: dict[str, str] = field(default_factory=drainage_layers.layer_ids, repr=False)  # role → layer id
    path: list[tuple[str, int, float]] = field(default_factory=list)  # downstream: (layer, fid, distance) in order
    outlet: tuple[str, int, float, int] | None = None  # downstream: the plant or outfall (layer, fid, m, node)


class NotOnNetwork(LookupError):
    """The feature is not on the drainage graph (not a network layer, or joined to nothing)."""


def _edges_sql(upstream: bool, table: str) -> str:
    ends = "target AS source, source AS target" if upstream else "source, target"
    return f"SELECT id, {ends}, cost, reverse_cost FROM {table}"


def _role(layer: str, allowed: tuple[str, ...]) -> str:
    role = drainage_layers.role_of(layer)
    if role not in allowed:
        raise NotOnNetwork(f"{layer} is not a layer of the drainage network's {', '.join(allowed)}")
    return role


async def _starts(conn: AsyncConnection, net: Network, role: str, fid: int, upstream: bool) -> list[int]:
    if role == "pipes":
        row = (await conn.execute(text(
            f"SELECT source, target, reverse_cost >= 0 AS two_way FROM {net.edge} "
            "WHERE layer IN ('gravity', 'pressure') AND fid = :fid"), {"fid": fid})).first()
        if row is None:
            raise NotOnNetwork(f"pipe {fid} joins no two known nodes")
        return [row.source, row.target] if row.two_way else [row.source if upstream else row.target]
    node = drainage_layers.node_id(role, fid)
    if (await conn.execute(text(f"SELECT FROM {net.node} WHERE id = :id"), {"id": node})).first() is None:
        raise NotOnNetwork(f"{drainage_layers.layer_id(role)} feature {fid} is not on the drainage network")
    return [node]


# pgr_drivingDistance from many starts is one walk from a virtual vertex 0 joined to each start by a
# zero-cost edge (its equicost mode can drop nodes when starts reach each other, in pgRouting 3.4).
FROM_ZERO = " UNION ALL SELECT -n, 0, s, 0, -1 FROM unnest(%{}$L::bigint[]) WITH ORDINALITY AS v (s, n)"


def _parts(net: Network, starts: str) -> str:
    """SQL: the parts up- or downstream (by :part_sql) of the parts of the nodes in `starts` (an array)."""
    return (f"SELECT component FROM {net.node} WHERE id = ANY({starts}) UNION "
            f"SELECT node FROM pgr_drivingDistance(format(:part_sql || '{FROM_ZERO.format(1)}', "
            f"ARRAY(SELECT component FROM {net.node} WHERE id = ANY({starts}))), 0::bigint, :unbounded) "
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


def _part_edges(net: Network, parts: str) -> str:
    """SQL: the pipes and reaches of `parts` (every edge a walk over them can reach: an edge is in its
    source node's part, and the part of either end of a reached edge is walked)."""
    return (f"SELECT source, target, reverse_cost, layer, fid FROM {net.edge} "
            f"WHERE component = ANY(ARRAY(SELECT component FROM {parts})) "
            "AND layer IN ('gravity', 'pressure', 'rivers')")


def _gate_nodes(net: Network) -> str:
    """SQL: (gate fid, node id) of the gates on a node, by its code (a code of two roles names the first)."""
    named = " UNION ALL ".join(f"SELECT {rank}, ({rank}::bigint << {ID_BITS}) | fid FROM {net.layers[role]} "
                               f"WHERE {net.key(role)} = g.node_code"
                               for rank, role in enumerate(NODE_ROLES, 1) if role in NAMED)
    return (f"SELECT g.fid, n.id FROM {net.layers['gates']} g "
            f"CROSS JOIN LATERAL (SELECT id FROM ({named}) x (rank, id) ORDER BY rank LIMIT 1) n")


# the role of a node id's rank (drainage_layers.node_id): NULL for the river's own nodes
NODE_ROLE = f"(CAST(:node_roles AS text[]))[(node >> {ID_BITS})::int]"
FID = f"node & {(1 << ID_BITS) - 1}"
EDGE_ROLE = "CASE WHEN e.layer = 'rivers' THEN 'rivers' ELSE 'pipes' END"


def _reached(net: Network, near: str, far: str) -> str:
    """SQL: per role reached, (role, fids, distances), from CTEs walked (the nodes) and edges (_part_edges):
    the feature nodes, the edges by their end nearer the start (a two-way edge: the nearer of either end;
    an edge is reached when that end is nearer than the limit, or is the start) and the gates, on a node
    or on a reach. Each join to the walk is by hash or by an array of a few ids: a nested loop over the
    walk costs seconds."""
    return f"""
, edges_reached AS MATERIALIZED (
    SELECT role, fid, min(distance_m) AS distance_m FROM (
        SELECT {EDGE_ROLE} AS role, e.fid, w.distance_m FROM walked w JOIN edges e ON e.{near} = w.node
        UNION ALL
        SELECT {EDGE_ROLE}, e.fid, w.distance_m FROM walked w JOIN edges e ON e.{far} = w.node AND e.reverse_cost >= 0
    ) e WHERE distance_m < :limit OR distance_m = 0 GROUP BY role, fid),
gate_nodes AS MATERIALIZED ({_gate_nodes(net)})
SELECT role, array_agg(fid), array_agg(distance_m) FROM (
    SELECT {NODE_ROLE} AS role, {FID} AS fid, distance_m FROM walked WHERE distance_m <= :limit
    UNION ALL
    SELECT role, fid, distance_m FROM edges_reached
    UNION ALL
    SELECT 'gates', fid, min(distance_m) FROM (
        SELECT g.fid, w.distance_m FROM gate_nodes g JOIN (
            SELECT node, distance_m FROM walked WHERE node = ANY(ARRAY(SELECT id FROM gate_nodes))) w ON w.node = g.id
        WHERE w.distance_m <= :limit
        UNION ALL
        SELECT g.fid, x.distance_m FROM (SELECT fid, distance_m FROM edges_reached WHERE role = 'rivers') x
        JOIN {net.layers['rivers']} r ON r.fid = x.fid
        JOIN {net.layers['gates']} g ON g.river_code = r.{net.key('rivers')}
        WHERE x.distance_m < :limit
    ) g GROUP BY fid
) reached WHERE role IS NOT NULL GROUP BY role
"""


STARTS_PARAM = "CAST(:starts AS bigint[])"
OUTLETS = ("treatment_plants", "outfalls")


async def _trace(conn: AsyncConnection, net: Network, starts: list[int], upstream: bool,
                 distance: float | None) -> Reach:
    near, far = ("target", "source") if upstream else ("source", "target")
    limit = UNBOUNDED if distance is None else distance
    rows = (await conn.execute(text(
        f"WITH parts AS ({_parts(net, STARTS_PARAM)}), walked AS ({_walked(STARTS_PARAM, 'parts', ':distance')}), "
        f"edges AS MATERIALIZED ({_part_edges(net, 'parts')}) " + _reached(net, near, far)), {
        "starts": starts, "part_sql": _edges_sql(upstream, net.part_edge),
        "edge_sql": _edges_sql(upstream, net.edge), "unbounded": UNBOUNDED, "distance": limit,
        "limit": limit, "failed_edges": [], "failed_nodes": [], "node_roles": list(NODE_ROLES)})).all()
    reach = Reach()
    for role, fids, distances in rows:
        reach.features[reach.layers[role]] = dict(zip(fids, distances))
        reach.nodes += len(fids) if role in NODE_ROLES else 0
    if not upstream:
        reach.outlet = min(((reach.layers[role], fid, metres, node) for role in OUTLETS
                            for fid, metres in reach.features.get(reach.layers[role], {}).items()
                            if (node := drainage_layers.node_id(role, fid)) not in starts),
                           key=lambda outlet: (outlet[2], outlet[3]), default=None)
    return reach


async def upstream(conn: AsyncConnection, layer: str, fid: int, distance: float | None = None, *,
                   network: Network | None = None) -> Reach:
    """Everything that drains to the feature (up to `distance` metres along the network): pipes, reaches,
    manholes, pump stations, plants, outfalls, stations, pollution sources, gates."""
    net = network or drainage_layers.now()
    starts = await _starts(conn, net, _role(layer, STARTS), fid, upstream=True)
    return await _trace(conn, net, starts, True, distance)


async def downstream(conn: AsyncConnection, layer: str, fid: int, distance: float | None = None, *,
                     network: Network | None = None) -> Reach:
    """Everything the feature drains through, and its shortest path to the nearest plant or outfall."""
    net = network or drainage_layers.now()
    starts = await _starts(conn, net, _role(layer, STARTS), fid, upstream=False)
    reach = await _trace(conn, net, starts, False, distance)
    if reach.outlet is None:
        return reach
    # the path's edges read by an array of their ids: pgRouting's row estimate can make a join to the edges
    # a scan of them all (a graph of the past, layers.drainage_past, is views over the graph now)
    steps = (await conn.execute(text(
        f"WITH parts AS ({_parts(net, STARTS_PARAM)}), path AS MATERIALIZED (SELECT * FROM pgr_dijkstra("
        "  format(:edge_sql || ' WHERE component = ANY(%L::bigint[])', (SELECT array_agg(component) FROM parts)), "
        f"  {STARTS_PARAM}, CAST(:outlet AS bigint))) "
        f"SELECT e.layer, e.fid, d.agg_cost + d.cost FROM path d JOIN {net.edge} e ON e.id = d.edge "
        "WHERE e.id = ANY(ARRAY(SELECT edge FROM path)) ORDER BY d.path_seq"), {
            "part_sql": _edges_sql(False, net.part_edge), "unbounded": UNBOUNDED,
            "edge_sql": _edges_sql(False, net.edge), "starts": starts, "outlet": reach.outlet[3]})).all()
    # a link (outfall or source to the river, source to its manhole) is a step of no layer: named by its kind
    reach.path = [(reach.layers[EDGE_ROLES[kind]] if kind in EDGE_ROLES else kind, fid, metres)
                  for kind, fid, metres in steps]
    return reach


def _lost(net: Network) -> str:
    """SQL: per role, (role, fids, distances) of what has lost its way out. The region searched for a way
    out is every part below the parts above the failure: a part above it that the walk did not reach
    only adds edges that are really there."""
    return f"""
WITH parts AS ({_parts(net, STARTS_PARAM)}),
up AS ({_walked(STARTS_PARAM, 'parts', ':unbounded')}),
region AS (SELECT component FROM parts UNION SELECT node FROM pgr_drivingDistance(
           format(:down_part_sql || '{FROM_ZERO.format(1)}', ARRAY(SELECT component FROM parts)), 0::bigint,
           :unbounded) WHERE node <> 0),
exits AS (SELECT ARRAY(SELECT id FROM {net.node} WHERE layer = ANY(CAST(:exits AS text[]))
                       AND component IN (SELECT component FROM region)) AS ids),
way_out AS ({_walked('(SELECT ids FROM exits)', 'region', ':unbounded', ':without')}),
lost AS MATERIALIZED (SELECT node, distance_m FROM up WHERE node NOT IN (SELECT node FROM way_out)
                      AND NOT node = ANY(CAST(:failed_nodes AS bigint[]))),
edges AS MATERIALIZED (SELECT id, source, target, reverse_cost, fid FROM {net.edge}
                       WHERE component = ANY(ARRAY(SELECT component FROM parts)) AND layer IN ('gravity', 'pressure')
                       AND NOT id = ANY(CAST(:failed_edges AS bigint[])))
SELECT role, array_agg(fid), array_agg(distance_m) FROM (
    SELECT {NODE_ROLE} AS role, {FID} AS fid, distance_m FROM lost
    UNION ALL
    SELECT 'pipes', fid, min(distance_m) FROM (
        SELECT e.fid, l.distance_m FROM lost l JOIN edges e ON e.source = l.node
        UNION ALL
        SELECT e.fid, l.distance_m FROM lost l JOIN edges e ON e.target = l.node AND e.reverse_cost >= 0
    ) e GROUP BY fid
) found WHERE role IS NOT NULL GROUP BY role
"""


async def service_area(conn: AsyncConnection, layer: str, fid: int, *, network: Network | None = None) -> Reach:
    """What loses its way out (to a river or a treatment plant) when the pump station or pipe fails:
    every node upstream of it with no other way out, and the pipes leaving those nodes. Distances are
    along the network to the failing feature."""
    net = network or drainage_layers.now()
    role = _role(layer, FAILING)
    starts = await _starts(conn, net, role, fid, upstream=True)
    if role == "pipes":
        failed_edges = list((await conn.execute(text(
            f"SELECT id FROM {net.edge} WHERE layer IN ('gravity', 'pressure') AND fid = :fid"),
            {"fid": fid})).scalars())
        failed_nodes: list[int] = []
    else:
        failed_edges, failed_nodes = [], starts
    rows = (await conn.execute(text(_lost(net)), {
        "starts": starts, "part_sql": _edges_sql(True, net.part_edge),
        "down_part_sql": _edges_sql(False, net.part_edge), "edge_sql": _edges_sql(True, net.edge),
        "unbounded": UNBOUNDED, "exits": list(EXITS), "failed_nodes": failed_nodes, "failed_edges": failed_edges,
        "node_roles": list(NODE_ROLES),
        "without": " AND NOT id = ANY(%2$L::bigint[]) AND NOT source = ANY(%3$L::bigint[]) "
                   "AND NOT target = ANY(%4$L::bigint[])"})).all()
    reach = Reach()
    for role, fids, distances in rows:
        reach.features[reach.layers[role]] = dict(zip(fids, distances))
        reach.nodes += len(fids) if role in NODE_ROLES else 0
    return reach
