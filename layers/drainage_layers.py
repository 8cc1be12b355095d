"""The layers the drainage graph is made of, found by the `network` role their specs declare
(layers.catalog), never by name; and where a graph build and a trace read them and the graph: the
layers and `twin.drainage_*` now, or, for a moment in the past, the layers as they were then (views over
the layers and their changes, layers.drainage_past, or whole copies, `at`) and a graph of their own, in
temporary views and tables that live as long as the transaction.

The graph tables hold roles, not layer ids (`drainage_node.layer` 'stations', 'sources', …; edges
'gravity', 'pressure', 'rivers' and the links), so renaming a layer changes no graph; answers speak
layer ids again through `layer_id`.
"""

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql
from sqlalchemy import column, insert, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from layers.catalog import SCHEMA, LayerSpec, get_layer, with_role
from layers.tables import current, layer_at
from twin.errors import ApiError

NODE_ROLES = ("manholes", "pump_stations", "treatment_plants", "outfalls", "stations", "sources")
NAMED = ("manholes", "pump_stations", "treatment_plants", "outfalls")  # the nodes pipes join by code
ROLES = ("pipes", *NODE_ROLES, "rivers", "gates")
EDGE_ROLES = {"gravity": "pipes", "pressure": "pipes", "rivers": "rivers"}  # the features a graph edge is part of
# A node's id says what it is, so a trace needs no look-up per node reached: a feature's is its role's rank
# (1 + its index in NODE_ROLES) << ID_BITS | its fid; the river's junctions and the points where features
# reach it are numbered under ranks JUNCTION and POINT.
ID_BITS = 40
JUNCTION, POINT = len(NODE_ROLES) + 1, len(NODE_ROLES) + 2


class NetworkIncomplete(ApiError):
    """No layer of the catalog with a key (its features' codes) declares a role the network is made of (a 409
    when it ends a request)."""

    def __init__(self, role: str):
        super().__init__(409, "network_incomplete", f"No layer with a key declares network = {role!r}; the drainage "
                         f"network needs one for each of {', '.join(ROLES)}. Register one (POST /admin/layers).")


def spec(role: str) -> LayerSpec:
    found = with_role(role)
    if found is None or not found.key:
        raise NetworkIncomplete(role)
    return found


def layer_id(role: str) -> str:
    return spec(role).id


def layer_ids() -> dict[str, str]:
    return {role: layer_id(role) for role in ROLES}


def role_of(layer: str) -> str | None:
    """The drainage role of a layer id, None when it plays none."""
    found = get_layer(layer)
    return None if found is None else found.network


def node_id(role: str, fid: int) -> int:
    return (NODE_ROLES.index(role) + 1) << ID_BITS | fid


def quoted(*names: str) -> str:
    return sql.Identifier(*names).as_string(None)


@dataclass(frozen=True)
class Network:
    """Quoted SQL names: each role's layer table (`layers`), the graph's node and edge tables and the
    small graph of its parts."""
    layers: dict[str, str]
    node: str
    edge: str
    part_edge: str
    moment: datetime | None = None  # the layers as they were then; None: now

    def key(self, role: str) -> str:
        """The quoted column a role's features are known by (its layer's first key field: a node's code)."""
        return quoted(spec(role).key[0])


def now() -> Network:
    return Network({role: quoted(SCHEMA, spec(role).id) for role in ROLES}, quoted("twin", "drainage_node"),
                   quoted("twin", "drainage_edge"), quoted("twin", "drainage_component_edge"))


async def changed_since(conn: AsyncConnection, moment: datetime) -> dict[str, int]:
    """Per role whose layer has changed since `moment`, how many versions were written or superseded since."""
    counts = []
    for role in ROLES:
        layer = spec(role).id
        counts.append(f"(SELECT count(*) FROM {quoted(SCHEMA, layer)} WHERE updated_at > :moment) + (SELECT count(*) "
                      f"FROM {quoted('history', layer)} WHERE valid && tstzrange(:moment, NULL, '()'))")
    changed = (await conn.execute(text("SELECT " + ", ".join(counts)), {"moment": moment})).one()
    return {role: n for role, n in zip(ROLES, changed) if n}


async def at(conn: AsyncConnection, moment: datetime) -> Network:
    """Copies of the network layers as they were at `moment`, and empty graph tables beside them, all
    temporary (dropped at commit: the caller's transaction must be writable, on the primary)."""
    copies = {}
    for role in ROLES:
        layer = spec(role)
        name = f"drainage_at_{role}"
        await conn.execute(text(f"CREATE TEMP TABLE {quoted(name)} (LIKE {quoted(SCHEMA, layer.id)}) "
                                "ON COMMIT DROP"))
        names = [c.name for c in current(layer).columns]
        then = layer_at(layer, moment)
        await conn.execute(insert(table(name, *(column(n) for n in names)))
                           .from_select(names, select(*(then.c[n] for n in names))))
        await conn.execute(text(f"CREATE INDEX ON {quoted(name)} ({quoted(layer.key[0])})"))  # codes join nodes
        if layer.geometry:
            await conn.execute(text(f"CREATE INDEX ON {quoted(name)} USING gist (geom)"))
        await conn.execute(text(f"ANALYZE {quoted(name)}"))
        copies[role] = quoted("pg_temp", name)
    for graph in ("drainage_node", "drainage_edge", "drainage_component_edge"):
        await conn.execute(text(f"CREATE TEMP TABLE {quoted(graph + '_at')} (LIKE {quoted('twin', graph)} "
                                "INCLUDING INDEXES) ON COMMIT DROP"))
    return Network(copies, quoted("pg_temp", "drainage_node_at"), quoted("pg_temp", "drainage_edge_at"),
                   quoted("pg_temp", "drainage_component_edge_at"), moment)
