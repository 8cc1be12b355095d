"""The drainage graph pgRouting traces: rivers, outfalls, pipes and the nodes between them, derived
from the layers into `twin.drainage_node` / `twin.drainage_edge` (migration 0017); or, for a moment
in the past, into temporary views and tables of the same form (`build_at`). The layers are those with each drainage
role (layers.drainage_layers), which is what the graph's `layer` columns hold.

Nodes are the features the water passes: manholes, pump stations, treatment plants, outfalls,
monitoring stations (where a river passes within STATION_M), pollution sources, and the river's own
junctions and the points where an outfall or a source reaches it. Edges are directed the way the
water goes (pgRouting's `reverse_cost` −1), with their length in metres as cost:

- a pipe from its upstream to its downstream node (by `direction`; 双向 both ways);
- each river edge (layers.network's noded reaches), cut where stations, outfalls and sources reach it;
- an outfall to the point of its reach (`river_code`, else the nearest within OUTFALL_M);
- a pollution source's discharge to the nearest sewage or combined manhole within SOURCE_MANHOLE_M,
  else to the nearest river within SOURCE_RIVER_M (the layer has no discharge-point field yet).

`component` partitions the nodes so a trace reads only what can matter: the weakly connected parts
of the gravity pipes, every other node alone; an edge belongs to its source node's part. The parts'
own graph (`twin.drainage_component_edge`: every edge between two parts) is small, so a trace first
finds the parts up- or downstream there and then walks the edges of those parts alone.

The graph is rebuilt as a whole when the layers it is made of have changed (`refresh`): their
feature counts and latest change times are its fingerprint.

The graph of a moment in the past (`build_at`) is the graph now with the changes since undone: the nodes
of the features changed since and the edges they make are left out, and those their versions then make
are added (layers.drainage_past), so it costs what the changes touch, not the network. A pipe is made
again when it changed or a node its codes name changed (either code, then or now); the river's edges and
links, a few hundred, are made again when a river, station, outfall or source changed, or a manhole one
of the sources may drain to. New edges belong to their source node's part, which keeps its part of now:
the parts then may be coarser than a rebuild would make them, never wrong.
"""

from datetime import datetime

from sqlalchemy import Executable, column, insert, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from layers import drainage_layers, drainage_past
from layers.drainage_layers import ID_BITS, JUNCTION, NAMED, NODE_ROLES, POINT, Network
from layers.network import river_graph
from layers.tables import layer_at

BUILT_FROM = tuple(role for role in drainage_layers.ROLES if role != "gates")  # gates are read as traces run
STATION_M = 50.0
OUTFALL_M = 200.0
SOURCE_MANHOLE_M = 300.0
SOURCE_RIVER_M = 500.0
LOCK = 1953982831  # serialises rebuilds (one more than the change log's 'twin')
# Past this many versions changed, the graph then is built whole: the views of an undone graph leave out the
# ids changed through a hashed list, which PostgreSQL plans only while the list fits in work_mem (at the default
# 4 MB, 100,000 ids did and 500,000 did not: each row read then scans the list).
UNDO_MAX = 50_000


def _fingerprint():
    now = drainage_layers.now()
    latest = " UNION ALL ".join(f"SELECT :role_{i} AS role, :layer_{i} AS layer, (SELECT max(updated_at) FROM "
                                f"{now.layers[role]}) AS latest" for i, role in enumerate(BUILT_FROM))
    names = {f"role_{i}": role for i, role in enumerate(BUILT_FROM)}
    names |= {f"layer_{i}": drainage_layers.layer_id(role) for i, role in enumerate(BUILT_FROM)}
    return text("SELECT string_agg(format('%s=%s:%s:%s', l.role, l.layer, c.features, l.latest), ',' "
                f"ORDER BY l.role) FROM ({latest}) l LEFT JOIN twin.feature_count c ON c.layer = l.layer"
                ).bindparams(**names)


# node ids by role and fid (drainage_layers.node_id); a code given to nodes of two roles names the first
_NODE = "SELECT ({rank}::bigint << {bits}) | fid, '{role}', fid, {code}, 0 FROM {table}"
_NODES = "INSERT INTO {node} (id, layer, fid, code, component) {features}"

_PIPES = """
WITH piped AS ({piped}),
named AS (SELECT DISTINCT ON (code) code, id FROM ({named_nodes}) n ORDER BY code, id)
INSERT INTO {edge} (id, source, target, cost, reverse_cost, layer, fid, component)
SELECT row_number() OVER (ORDER BY p.fid),
       CASE WHEN p.direction = '反向' THEN b.id ELSE a.id END, CASE WHEN p.direction = '反向' THEN a.id ELSE b.id END,
       ST_Length(p.geom::geography), CASE WHEN p.direction = '双向' THEN ST_Length(p.geom::geography) ELSE -1 END,
       CASE WHEN p.flow_type = '压力' THEN 'pressure' ELSE 'gravity' END, p.fid, 0
FROM piped p JOIN named a ON a.code = p.from_code JOIN named b ON b.code = p.to_code
WHERE a.id <> b.id
"""

_RIVER_EDGES = """
CREATE TEMP TABLE drainage_river_edge (eid bigint, fid bigint, line geometry, length_m float8, source bigint,
                                       target bigint) ON COMMIT DROP
"""

# Where stations, outfalls and sources reach a river edge (eid, frac along it) or a source its manhole:
# a station is its own river point; an outfall or a source gets a point and a link to it (link_m long).
_ATTACHMENTS = """
CREATE TEMP TABLE drainage_attachment ON COMMIT DROP AS
WITH stations AS (
    SELECT n.id AS node, e.eid, ST_LineLocatePoint(e.line, s.geom) AS frac, NULL::float8 AS link_m,
           NULL::text AS link_layer
    FROM {stations} s JOIN {nodes} n ON n.layer = 'stations' AND n.fid = s.fid
    CROSS JOIN LATERAL (SELECT eid, line FROM drainage_river_edge ORDER BY line <-> s.geom LIMIT 1) e
    WHERE ST_DWithin(e.line::geography, s.geom::geography, {STATION_M})),
outfalls AS (
    SELECT n.id AS node, e.eid, ST_LineLocatePoint(e.line, o.geom) AS frac,
           ST_Distance(e.line::geography, o.geom::geography) AS link_m, 'outfall_links' AS link_layer
    FROM {outfalls} o JOIN {nodes} n ON n.layer = 'outfalls' AND n.fid = o.fid
    CROSS JOIN LATERAL (
        SELECT e.eid, e.line, r.{river_key} AS river_code FROM drainage_river_edge e JOIN {rivers} r ON r.fid = e.fid
        ORDER BY r.{river_key} IS DISTINCT FROM o.river_code, e.line <-> o.geom LIMIT 1) e
    WHERE e.river_code = o.river_code OR ST_DWithin(e.line::geography, o.geom::geography, {OUTFALL_M})),
sewered AS (
    SELECT n.id AS node, mn.id AS manhole, ST_Distance(h.geom::geography, s.geom::geography) AS link_m
    FROM {sources} s JOIN {nodes} n ON n.layer = 'sources' AND n.fid = s.fid
    CROSS JOIN LATERAL (SELECT fid, geom FROM {manholes} WHERE kind IN ('污水', '合流')
                        ORDER BY geom <-> s.geom LIMIT 1) h
    JOIN {nodes} mn ON mn.layer = 'manholes' AND mn.fid = h.fid
    WHERE ST_DWithin(h.geom::geography, s.geom::geography, {SOURCE_MANHOLE_M})),
direct AS (
    SELECT n.id AS node, e.eid, ST_LineLocatePoint(e.line, s.geom) AS frac,
           ST_Distance(e.line::geography, s.geom::geography) AS link_m, 'source_links' AS link_layer
    FROM {sources} s JOIN {nodes} n ON n.layer = 'sources' AND n.fid = s.fid
    CROSS JOIN LATERAL (SELECT eid, line FROM drainage_river_edge ORDER BY line <-> s.geom LIMIT 1) e
    WHERE ST_DWithin(e.line::geography, s.geom::geography, {SOURCE_RIVER_M})
      AND n.id NOT IN (SELECT node FROM sewered)),
linked AS (SELECT * FROM outfalls UNION ALL SELECT * FROM direct)
SELECT node AS point, node AS feature, eid, frac, link_m, link_layer, NULL::bigint AS manhole FROM stations
UNION ALL
SELECT ({POINT}::bigint << {bits}) + row_number() OVER (ORDER BY node), node, eid, frac, link_m, link_layer, NULL
FROM linked
UNION ALL
SELECT NULL, node, NULL, NULL, link_m, 'source_links', manhole FROM sewered
"""

_RIVER_NODES = """
INSERT INTO {node} (id, layer, fid, code, component)
SELECT DISTINCT ({JUNCTION}::bigint << {bits}) + node, 'rivers', NULL::bigint, NULL, 0
FROM (SELECT source AS node FROM drainage_river_edge UNION SELECT target FROM drainage_river_edge) ends
"""

_RIVER_POINTS = """
INSERT INTO {node} (id, layer, fid, code, component)
SELECT point, 'river_points', NULL, NULL, 0 FROM drainage_attachment WHERE point <> feature
"""

# Each river edge cut at its attachment points, in order along it; then the links to the river and
# to the manholes.
_RIVER_PIECES = """
WITH base AS (SELECT (SELECT coalesce(max(id), 0) FROM {edge}) AS top, {JUNCTION}::bigint << {bits} AS river0),
stops AS (
    SELECT eid, 0.0::float8 AS frac, (SELECT river0 FROM base) + source AS node FROM drainage_river_edge
    UNION ALL SELECT eid, 1.0, (SELECT river0 FROM base) + target FROM drainage_river_edge
    UNION ALL SELECT eid, frac, point FROM drainage_attachment WHERE eid IS NOT NULL AND frac IS NOT NULL),
cut AS (SELECT eid, node, frac, lead(node) OVER w AS next_node, lead(frac) OVER w AS next_frac
        FROM stops WINDOW w AS (PARTITION BY eid ORDER BY frac, node))
INSERT INTO {edge} (id, source, target, cost, reverse_cost, layer, fid, component)
SELECT (SELECT top FROM base) + row_number() OVER (ORDER BY c.eid, c.frac, c.node), c.node, c.next_node,
       (c.next_frac - c.frac) * e.length_m, -1, 'rivers', e.fid, 0
FROM cut c JOIN drainage_river_edge e ON e.eid = c.eid WHERE c.next_node IS NOT NULL
"""

_LINKS = """
INSERT INTO {edge} (id, source, target, cost, reverse_cost, layer, fid, component)
SELECT (SELECT coalesce(max(id), 0) FROM {edge}) + row_number() OVER (ORDER BY a.feature, a.point),
       a.feature, coalesce(a.manhole, a.point), a.link_m, -1, a.link_layer, a.feature & {fid_mask}, 0
FROM drainage_attachment a
WHERE a.point IS DISTINCT FROM a.feature
"""

_COMPONENTS = """
UPDATE {node} n SET component = coalesce(c.component, n.id)
FROM {node} m LEFT JOIN pgr_connectedComponents(
    'SELECT id, source, target, cost, cost AS reverse_cost FROM {edge} WHERE layer = ''gravity''') c
    ON c.node = m.id
WHERE n.id = m.id
"""

_EDGE_COMPONENTS = """
UPDATE {edge} e SET component = n.component FROM {nodes} n WHERE n.id = e.source
"""

_COMPONENT_EDGES = """
INSERT INTO {part_edge} (id, source, target, cost, reverse_cost)
SELECT row_number() OVER (ORDER BY a, b), a, b, 1, CASE WHEN two_way THEN 1 ELSE -1 END FROM (
    SELECT s.component AS a, t.component AS b, bool_or(e.reverse_cost >= 0) AS two_way
    FROM {edge} e JOIN {nodes} s ON s.id = e.source JOIN {nodes} t ON t.id = e.target
    WHERE s.component <> t.component GROUP BY 1, 2) crossing
"""


def _names(net: Network, **more) -> dict:
    """What the templates are formatted with, for the whole graph: `node` the node table written, `nodes` the
    one read (the same table here; a graph undone reads its view and writes its delta)."""
    features = " UNION ALL ".join(_NODE.format(rank=rank, bits=ID_BITS, role=role, code=net.key(role),
                                               table=net.layers[role]) for rank, role in enumerate(NODE_ROLES, 1))
    named = ", ".join(f"'{role}'" for role in NAMED)
    return net.layers | {"node": net.node, "nodes": net.node, "edge": net.edge, "part_edge": net.part_edge,
                         "features": features, "piped": f"SELECT * FROM {net.layers['pipes']}",
                         "named_nodes": f"SELECT code, id FROM {net.node} WHERE layer IN ({named})",
                         "river_key": net.key("rivers"), "STATION_M": STATION_M, "OUTFALL_M": OUTFALL_M,
                         "SOURCE_MANHOLE_M": SOURCE_MANHOLE_M, "SOURCE_RIVER_M": SOURCE_RIVER_M, "bits": ID_BITS,
                         "fid_mask": (1 << ID_BITS) - 1, "JUNCTION": JUNCTION, "POINT": POINT} | more


def _river(net: Network, names: dict) -> list[Executable]:
    """The river's edges, cut where stations, outfalls and sources reach it, and the links to it."""
    graph = river_graph(layer_at(drainage_layers.spec("rivers"), net.moment))
    river_edge = table("drainage_river_edge", *(column(c) for c in ("eid", "fid", "line", "length_m", "source",
                                                                     "target")))
    fill = insert(river_edge).from_select(
        ["eid", "fid", "line", "length_m", "source", "target"],
        select(graph.c.eid, graph.c.fid, graph.c.line, graph.c.length_m, graph.c.source, graph.c.target))
    return [text(_RIVER_EDGES), fill, text("CREATE INDEX ON drainage_river_edge USING gist (line)"),
            text("ANALYZE drainage_river_edge"),
            *(text(template.format(**names)) for template in (_ATTACHMENTS, _RIVER_NODES, _RIVER_POINTS,
                                                               _RIVER_PIECES, _LINKS)),
            text("DROP TABLE drainage_attachment, drainage_river_edge")]  # another build may follow in this transaction


def _steps(net: Network) -> list[Executable]:
    names = _names(net)

    def sql(template: str):
        return text(template.format(**names))

    return [sql("DELETE FROM {part_edge}"), sql("DELETE FROM {edge}"), sql("DELETE FROM {node}"), sql(_NODES),
            sql(_PIPES), *_river(net, names), sql(_COMPONENTS), sql(_EDGE_COMPONENTS), sql(_COMPONENT_EDGES),
            sql("ANALYZE {node}"), sql("ANALYZE {edge}"), sql("ANALYZE {part_edge}")]


RIVER_EDGES = ("rivers", "outfall_links", "source_links")  # the edges and nodes `_river` makes
RIVER_NODES = ("rivers", "river_points")
BY_RIVER = ("rivers", "stations", "outfalls", "sources")  # the roles whose features `_river` places
TOUCHED = "pg_temp.drainage_touched_pipe"

_TOUCHED_PIPES = """
CREATE TEMP TABLE drainage_touched_pipe ON COMMIT DROP AS
SELECT fid FROM ({changed}) c
UNION SELECT fid FROM {pipes} WHERE from_code = ANY(ARRAY({codes}))
UNION SELECT fid FROM {pipes} WHERE to_code = ANY(ARRAY({codes}))
"""


async def _river_moved(conn: AsyncConnection, past: drainage_past.Past) -> bool:
    """Whether a change since may move the river's edges or links: a feature placed on it, or a manhole
    (then or now) a source may drain to."""
    if any(role in past.gone for role in BY_RIVER):
        return True
    if "manholes" not in past.gone:
        return False
    now = drainage_layers.now().layers
    return (await conn.execute(text(
        f"SELECT EXISTS (SELECT FROM (SELECT geom FROM {now['manholes']} WHERE fid IN (SELECT fid FROM "
        f"{past.gone['manholes']}) UNION ALL SELECT geom FROM {past.was['manholes']}) m JOIN {now['sources']} s "
        f"ON ST_DWithin(m.geom::geography, s.geom::geography, {SOURCE_MANHOLE_M}))"))).scalar()


async def _undone(conn: AsyncConnection, past: drainage_past.Past) -> list[Executable]:
    """Steps that fill the graph then's delta tables: the changed features' nodes, the pipes they or their
    codes (then or now) touch, the river part when it may have moved; new ids above the graph's."""
    net, now = past.network, drainage_layers.now()
    ranked = [(rank, role) for rank, role in enumerate(NODE_ROLES, 1) if role in past.gone]
    codes = " UNION ".join(f"SELECT {net.key(role)} FROM {now.layers[role]} WHERE fid IN (SELECT fid FROM "
                           f"{past.gone[role]}) UNION SELECT {net.key(role)} FROM {past.was[role]}"
                           for _, role in ranked if role in NAMED)
    named = " UNION ALL ".join(
        f"SELECT {net.key(role)} AS code, ({rank}::bigint << {ID_BITS}) | fid AS id FROM {net.layers[role]} "
        f"WHERE {net.key(role)} = ANY(ARRAY(SELECT from_code FROM piped UNION SELECT to_code FROM piped))"
        for rank, role in enumerate(NODE_ROLES, 1) if role in NAMED)
    names = _names(net, node=past.node_added, edge=past.edge_added, part_edge=past.part_edge_added,
                   features=" UNION ALL ".join(_NODE.format(rank=rank, bits=ID_BITS, role=role, code=net.key(role),
                                                            table=past.was[role]) for rank, role in ranked),
                   piped=f"SELECT * FROM {net.layers['pipes']} WHERE fid = ANY(ARRAY(SELECT fid FROM {TOUCHED}))",
                   named_nodes=named)
    steps = [f"INSERT INTO {past.node_gone} SELECT ({rank}::bigint << {ID_BITS}) | fid FROM {past.gone[role]}"
             for rank, role in ranked]
    steps += [_NODES.format(**names)] if ranked else []
    if codes or "pipes" in past.gone:
        changed = f"SELECT fid FROM {past.gone['pipes']}" if "pipes" in past.gone else "SELECT NULL::bigint AS fid"
        steps += [_TOUCHED_PIPES.format(changed=changed, pipes=now.layers["pipes"], codes=codes or "SELECT NULL"),
                  f"INSERT INTO {past.edge_gone} SELECT id FROM twin.drainage_edge WHERE layer IN ('gravity', "
                  f"'pressure') AND fid = ANY(ARRAY(SELECT fid FROM {TOUCHED}))", _PIPES.format(**names)]
    river = await _river_moved(conn, past)
    if river:
        steps += [f"INSERT INTO {past.edge_gone} SELECT id FROM twin.drainage_edge WHERE layer IN "
                  f"({', '.join(map(repr, RIVER_EDGES))})",
                  f"INSERT INTO {past.node_gone} SELECT id FROM twin.drainage_node WHERE layer IN "
                  f"({', '.join(map(repr, RIVER_NODES))})"]
    steps += [f"ANALYZE {table}" for table in (past.node_gone, past.edge_gone, past.node_added, past.edge_added)]
    after = [f"UPDATE {past.node_added} a SET component = coalesce((SELECT component FROM twin.drainage_node n "
             "WHERE n.id = a.id), a.id)",
             f"UPDATE {past.edge_added} SET id = id + (SELECT coalesce(max(id), 0) FROM twin.drainage_edge)",
             _EDGE_COMPONENTS.format(**names), _COMPONENT_EDGES.format(**names),
             f"UPDATE {past.part_edge_added} SET id = id + (SELECT coalesce(max(id), 0) FROM "
             "twin.drainage_component_edge)",
             # a trace joins the path it found to the edges by id, a few hundred probes
             f"CREATE INDEX ON {past.edge_added} (id)", f"CREATE INDEX ON {past.node_added} (id)",
             *(f"ANALYZE {table}" for table in (past.node_added, past.edge_added, past.part_edge_added))]
    return [*map(text, steps), *(_river(net, names) if river else []), *map(text, after)]


def _record(fingerprint: str):
    return text("INSERT INTO twin.drainage_graph (fingerprint) VALUES (:f) ON CONFLICT (only_row) "
                "DO UPDATE SET fingerprint = excluded.fingerprint, built_at = now()").bindparams(f=fingerprint)


def rebuild(conn) -> None:
    """Rebuild the graph from the layers, inside the caller's transaction (a sync connection)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
    for step in _steps(drainage_layers.now()):
        conn.execute(step)
    conn.execute(_record(conn.execute(_fingerprint()).scalar()))


async def refresh(conn: AsyncConnection) -> bool:
    """Rebuild the graph if the layers changed since it was built; True when it did. In a transaction."""
    fingerprint = (await conn.execute(_fingerprint())).scalar()
    built = (await conn.execute(text("SELECT fingerprint FROM twin.drainage_graph"))).scalar()
    if built == fingerprint:
        return False
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
    if (await conn.execute(text("SELECT fingerprint FROM twin.drainage_graph"))).scalar() == fingerprint:
        return False  # another server rebuilt it while this one waited
    await conn.execute(text("SET LOCAL statement_timeout = 0"))  # a rebuild reads the whole network
    for step in _steps(drainage_layers.now()):
        await conn.execute(step)
    await conn.execute(_record(fingerprint))
    return True


async def build_at(conn: AsyncConnection, moment: datetime) -> Network:
    """The graph of the network as it was at `moment`: the current graph (`refresh` it first) when no
    network layer has changed since; else the current graph with the changes since undone (layers.drainage_past),
    or one built whole (`rebuild_at`) when the current graph is older than the caller's snapshot or more than
    UNDO_MAX versions changed. In a writable transaction on the primary."""
    changed = await drainage_layers.changed_since(conn, moment)
    if not changed:
        return drainage_layers.now()
    built = (await conn.execute(text("SELECT fingerprint FROM twin.drainage_graph"))).scalar()
    if sum(changed.values()) > UNDO_MAX or built != (await conn.execute(_fingerprint())).scalar():
        return await rebuild_at(conn, moment)
    past = await drainage_past.since(conn, moment, list(changed))
    for step in await _undone(conn, past):
        await conn.execute(step)
    return past.network


async def rebuild_at(conn: AsyncConnection, moment: datetime) -> Network:
    """The graph of the network as it was at `moment`, built whole in temporary tables from copies of the
    layers then (layers.drainage_layers.at): seconds to minutes, as the network grows."""
    net = await drainage_layers.at(conn, moment)
    for step in _steps(net):
        await conn.execute(step)
    return net
