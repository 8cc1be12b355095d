"""The drainage network as it was at a moment, read from the network now and the changes since, so that
what it costs grows with the changes, not with the network (layers.drainage_graph.build_at).

A network layer then is its features now less those changed since (a version written or superseded after
the moment), plus those features' versions valid then (`history.<layer>`): a temporary view over the layer
and two small temporary tables. The graph then is the graph now less the nodes and edges the changes
touched, plus the ones their versions then make (layers.drainage_graph fills `Past.node_added` and the
other delta tables): views of the same form over `twin.drainage_*`. All of it is dropped at commit (the
views with the tables they read), so the caller's transaction must be writable, on the primary.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import column, insert, table, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from layers.catalog import SCHEMA
from layers.drainage_layers import Network, now, quoted, spec
from layers.tables import current, parts

GRAPH = ("drainage_node", "drainage_edge", "drainage_component_edge")
NODE = ("id", "layer", "fid", "code", "component")
EDGE = ("id", "source", "target", "cost", "reverse_cost", "layer", "fid", "component")


def _view(name: str, columns, now: str, added: str, key: str, gone: str):
    """A view of the rows of `now` whose `key` is not in `gone`, and the rows of `added`. The filter is on the
    union, not on its first branch: a branch with a WHERE of its own is planned apart (PostgreSQL's append
    members take no quals), which leaves the layer's indexes out of joins and nearest-neighbour searches."""
    listed = ", ".join(map(quoted, columns))
    return text(f"CREATE TEMP VIEW {name} AS SELECT {', '.join(f'u.{quoted(c)}' for c in columns)} FROM ("
                f"SELECT {listed}, false AS added FROM {now} UNION ALL SELECT {listed}, true FROM {added}) u "
                f"WHERE u.added OR u.{key} NOT IN (SELECT {key} FROM {gone})")


@dataclass(frozen=True)
class Past:
    """The network then (`network`: the layers and the graph as views) and what the views are made of:
    per role with changes, the fids changed since (`gone`) and their versions then (`was`); the graph's
    nodes and edges now that are not then (`node_gone`, `edge_gone`: ids) and those then that are not now
    (`node_added`, `edge_added`, `part_edge_added`: rows of the graph tables' form)."""
    network: Network
    gone: dict[str, str]
    was: dict[str, str]
    node_gone: str = quoted("pg_temp", "drainage_node_gone")
    edge_gone: str = quoted("pg_temp", "drainage_edge_gone")
    node_added: str = quoted("pg_temp", "drainage_node_added")
    edge_added: str = quoted("pg_temp", "drainage_edge_added")
    part_edge_added: str = quoted("pg_temp", "drainage_component_edge_added")


async def _changed(conn: AsyncConnection, role: str, moment: datetime) -> tuple[str, str]:
    """Temporary tables of the role's features changed since `moment` and of their versions then."""
    layer = spec(role)
    gone, was = f"drainage_gone_{role}", f"drainage_was_{role}"
    await conn.execute(text(
        f"CREATE TEMP TABLE {quoted(gone)} ON COMMIT DROP AS SELECT fid FROM {quoted(SCHEMA, layer.id)} "
        f"WHERE updated_at > :moment UNION SELECT fid FROM {quoted('history', layer.id)} "
        "WHERE valid && tstzrange(:moment, NULL, '()')"), {"moment": moment})
    await conn.execute(text(f"CREATE TEMP TABLE {quoted(was)} (LIKE {quoted(SCHEMA, layer.id)}) ON COMMIT DROP"))
    names = [c.name for c in current(layer).columns]
    chosen = text(f"fid = ANY(ARRAY(SELECT fid FROM {quoted(gone)}))")  # by index, in the layer and its history
    await conn.execute(insert(table(was, *(column(n) for n in names))).from_select(
        names, union_all(*(part.where(chosen) for part in parts(layer, moment)))))
    for indexed in (f"({quoted(layer.key[0])})", "USING gist (geom)" if layer.geometry else None):
        if indexed:
            await conn.execute(text(f"CREATE INDEX ON {quoted(was)} {indexed}"))
    for made in (gone, was):
        await conn.execute(text(f"ANALYZE {quoted(made)}"))
    await conn.execute(_view(quoted(f"drainage_at_{role}"), names, quoted(SCHEMA, layer.id), quoted(was),
                             "fid", quoted(gone)))
    return quoted("pg_temp", gone), quoted("pg_temp", was)


async def since(conn: AsyncConnection, moment: datetime, changed: list[str]) -> Past:
    """The layers as they were at `moment` (a view for each of the `changed` roles' layers, the layer itself for
    the others), and empty delta tables for the graph then, with the graph's views over them."""
    layers, gone, was = dict(now().layers), {}, {}
    for role in changed:
        gone[role], was[role] = await _changed(conn, role, moment)
        layers[role] = quoted("pg_temp", f"drainage_at_{role}")
    network = Network(layers, *(quoted("pg_temp", f"{graph}_at") for graph in GRAPH), moment)
    past = Past(network, gone, was)
    for gone_ids in (past.node_gone, past.edge_gone):
        await conn.execute(text(f"CREATE TEMP TABLE {gone_ids} (id bigint PRIMARY KEY) ON COMMIT DROP"))
    for graph, added in zip(GRAPH, (past.node_added, past.edge_added, past.part_edge_added)):
        await conn.execute(text(f"CREATE TEMP TABLE {added} (LIKE {quoted('twin', graph)}) ON COMMIT DROP"))
    await conn.execute(_view(network.node, NODE, "twin.drainage_node", past.node_added, "id", past.node_gone))
    await conn.execute(_view(network.edge, EDGE, "twin.drainage_edge", past.edge_added, "id", past.edge_gone))
    # an edge between two parts now that is gone then leaves its parts joined: the walk reads its parts'
    # edges then, so it reaches no more than it would, only reads a little more
    await conn.execute(text(f"CREATE TEMP VIEW {network.part_edge} AS SELECT * FROM twin.drainage_component_edge "
                            f"UNION ALL SELECT * FROM {past.part_edge_added}"))
    return past
