"""A brute-force reachability oracle (networkx) for the drainage traces, read from the same graph
tables pgRouting walks, and a way to run the async traces from sync tests. The graph holds roles
(layers.drainage_layers); the oracle answers by layer id, as the traces do."""

import asyncio

import networkx as nx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from layers import drainage_graph, drainage_layers, drainage_trace

LON, LAT = 120.40, 31.50
STEP = 0.001  # about 100 m between grid points
LAYERS = ("pipes", "manholes", "pump_stations", "treatment_plants", "outfalls", "gates", "rivers",
          "monitoring_stations", "pollution_sources")


class Graph:
    def __init__(self, engine):
        with engine.connect() as conn:
            self.nodes = {r.id: (r.layer, r.fid, r.code) for r in conn.execute(text(
                "SELECT id, layer, fid, code FROM twin.drainage_node"))}
            self.edges = conn.execute(text(
                "SELECT id, source, target, cost, reverse_cost, layer, fid FROM twin.drainage_edge")).all()
            tables = drainage_layers.now().layers
            self.gates = conn.execute(text(f"SELECT fid, node_code, river_code FROM {tables['gates']}")).all()
            self.river_codes = dict(conn.execute(text(f"SELECT fid, code FROM {tables['rivers']}")).all())
        self.g = nx.DiGraph()
        self.g.add_nodes_from(self.nodes)
        for e in self.edges:
            self._arc(e.source, e.target, e.cost)
            if e.reverse_cost >= 0:
                self._arc(e.target, e.source, e.reverse_cost)

    def _arc(self, a, b, cost):
        if not self.g.has_edge(a, b) or self.g[a][b]["weight"] > cost:
            self.g.add_edge(a, b, weight=cost)

    def node_of(self, layer, fid) -> list[int]:
        role = drainage_layers.role_of(layer)
        return [n for n, (lay, f, _) in self.nodes.items() if lay == role and f == fid]

    def starts(self, layer, fid, upstream) -> list[int]:
        if drainage_layers.role_of(layer) == "pipes":
            e = next(e for e in self.edges if e.layer in ("gravity", "pressure") and e.fid == fid)
            return [e.source, e.target] if e.reverse_cost >= 0 else [e.source if upstream else e.target]
        return self.node_of(layer, fid)

    def distances(self, starts, upstream, graph=None) -> dict[int, float]:
        g = graph if graph is not None else self.g
        return nx.multi_source_dijkstra_path_length(g.reverse(copy=False) if upstream else g, starts)

    def reach(self, layer, fid, upstream, distance=None) -> dict[str, dict[int, float]]:
        dist = self.distances(self.starts(layer, fid, upstream), upstream)
        limit = float("inf") if distance is None else distance
        found: dict[str, dict[int, float]] = {}
        for node, metres in dist.items():
            lay, f, _ = self.nodes[node]
            if f is not None and metres <= limit:
                found.setdefault(lay, {})[f] = metres
        for e in self.edges:
            if e.layer not in drainage_layers.EDGE_ROLES:
                continue
            near, far = (e.target, e.source) if upstream else (e.source, e.target)
            ends = [dist[n] for n in (near, far) if n in dist and (n == near or e.reverse_cost >= 0)]
            if ends and (min(ends) < limit or min(ends) == 0):
                mine = found.setdefault(drainage_layers.EDGE_ROLES[e.layer], {})
                mine[e.fid] = min(min(ends), mine.get(e.fid, float("inf")))
        codes = {self.nodes[n][2]: m for n, m in dist.items() if m <= limit and self.nodes[n][2] is not None
                 and self.nodes[n][0] in drainage_layers.NAMED}
        reaches = {self.river_codes[f]: m for f, m in found.get("rivers", {}).items()}
        gates = {g.fid: min(m for m in (codes.get(g.node_code), reaches.get(g.river_code)) if m is not None)
                 for g in self.gates if g.node_code in codes or g.river_code in reaches}
        if gates:
            found["gates"] = gates
        return _by_layer(found)

    def lost(self, layer, fid) -> dict[str, dict[int, float]]:
        starts = self.starts(layer, fid, upstream=True)
        up = self.distances(starts, upstream=True)
        cut = self.g.copy()
        if drainage_layers.role_of(layer) == "pipes":
            failed = [e for e in self.edges if e.layer in ("gravity", "pressure") and e.fid == fid]
            for e in failed:
                for a, b in ((e.source, e.target), (e.target, e.source)):
                    if cut.has_edge(a, b):
                        cut.remove_edge(a, b)
            # a parallel pipe between the same nodes still carries the water
            for e in self.edges:
                if e.layer in ("gravity", "pressure") and e.fid != fid:
                    cut.add_edge(e.source, e.target, weight=e.cost)
                    if e.reverse_cost >= 0:
                        cut.add_edge(e.target, e.source, weight=e.reverse_cost)
            failed_ids, failed_nodes = {e.id for e in failed}, set()
        else:
            cut.remove_nodes_from(starts)
            failed_ids, failed_nodes = set(), set(starts)
        exits = [n for n, (lay, _, _) in self.nodes.items() if lay in drainage_trace.EXITS and n in cut]
        way_out = set(self.distances(exits, True, cut)) if exits else set()
        lost = {n: m for n, m in up.items() if n not in way_out and n not in failed_nodes}
        found: dict[str, dict[int, float]] = {}
        for node, metres in lost.items():
            lay, f, _ = self.nodes[node]
            if f is not None:
                found.setdefault(lay, {})[f] = metres
        for e in self.edges:
            if e.layer in ("gravity", "pressure") and e.id not in failed_ids:
                ends = [lost[n] for n in (e.source, e.target) if n in lost and (n == e.source or e.reverse_cost >= 0)]
                if ends:
                    mine = found.setdefault("pipes", {})
                    mine[e.fid] = min(min(ends), mine.get(e.fid, float("inf")))
        return _by_layer(found)


def _by_layer(found: dict[str, dict]) -> dict[str, dict]:
    ids = drainage_layers.layer_ids()
    return {ids[role]: features for role, features in found.items()}


class Traces:
    """The async traces, run on their own event loop for sync tests."""

    def __init__(self, url: str):
        self.runner = asyncio.Runner()
        self.engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://"))

    def __call__(self, kind: str, *args):
        async def run():
            async with self.engine.connect() as conn:
                return await getattr(drainage_trace, kind)(conn, *args)
        return self.runner.run(run())

    def refresh(self) -> bool:
        async def run():
            async with self.engine.begin() as conn:
                return await drainage_graph.refresh(conn)
        return self.runner.run(run())

    def close(self):
        self.runner.run(self.engine.dispose())
        self.runner.close()


def same(found, expected) -> None:
    """Same layers, same features, same distances (to a micrometre)."""
    assert {k: set(v) for k, v in found.items()} == {k: set(v) for k, v in expected.items()}
    for layer, features in expected.items():
        for fid, metres in features.items():
            assert abs(found[layer][fid] - metres) <= 1e-6 * max(1.0, metres), (layer, fid)


def node_point(i: int) -> str:
    return f"SRID=4490;POINT({LON + STEP * (i % 7)} {LAT + STEP * (i // 7)})"


def load_network(engine, n, pipes, outfalls, pumps, sources):
    """A small network in place of the layers, its graph built: a river with a station, a plant P0, nodes N0…N{n-1}
    on a grid (outfalls onto the river, pump stations, else manholes with a source beside those in `sources`),
    and pipes (a, b, flow_type, direction) between them (a pipe from a node to itself goes to the plant)."""
    with engine.begin() as conn:
        for layer in LAYERS:
            conn.execute(text(f"DELETE FROM layers.{layer}"))
        conn.execute(text("INSERT INTO layers.rivers (code, name, geom) VALUES ('R1', '试验河', "
                          "ST_GeomFromEWKT(:g))"),
                     {"g": f"SRID=4490;MULTILINESTRING(({LON - 0.003} {LAT - 0.004}, {LON + 0.01} {LAT - 0.004}))"})
        conn.execute(text("INSERT INTO layers.monitoring_stations (code, name, geom) VALUES ('S1', '断面', "
                          "ST_GeomFromEWKT(:g))"), {"g": f"SRID=4490;POINT({LON + 0.008} {LAT - 0.004})"})
        conn.execute(text("INSERT INTO layers.treatment_plants (code, name, geom) VALUES ('P0', '厂', "
                          "ST_GeomFromEWKT(:g))"), {"g": f"SRID=4490;POINT({LON - 0.002} {LAT + 0.005})"})
        for i in range(n):
            layer = "outfalls" if i in outfalls else "pump_stations" if i in pumps else "manholes"
            extra = {"outfalls": ("kind, river_code", "'雨水', 'R1'"), "pump_stations": ("name, kind", "'泵', '污水'"),
                     "manholes": ("kind", "'污水'")}[layer]
            conn.execute(text(f"INSERT INTO layers.{layer} (code, {extra[0]}, geom) VALUES (:code, {extra[1]}, "
                              "ST_GeomFromEWKT(:g))"), {"code": f"N{i}", "g": node_point(i)})
            if i in sources and layer == "manholes":
                conn.execute(text("INSERT INTO layers.pollution_sources (credit_code, name, permit_class, geom) "
                                  "VALUES (:code, '企业', '登记管理', ST_Translate(ST_GeomFromEWKT(:g), 0.0001, 0))"),
                             {"code": f"91320214MA{i:08d}", "g": node_point(i)})
        nodes = [f"N{i}" for i in range(n)] + ["P0"]
        for k, (a, b, flow, direction) in enumerate(pipes):
            target = nodes[b] if a != b else "P0"
            conn.execute(text(
                "INSERT INTO layers.pipes (code, kind, flow_type, from_code, to_code, direction, geom) VALUES "
                "(:code, '污水', :flow, :a, :b, :d, ST_Multi(ST_MakeLine("
                "(SELECT geom FROM (SELECT code, geom FROM layers.manholes UNION ALL SELECT code, geom FROM "
                "layers.pump_stations UNION ALL SELECT code, geom FROM layers.outfalls UNION ALL SELECT code, geom "
                "FROM layers.treatment_plants) x WHERE code = :a), "
                "(SELECT geom FROM (SELECT code, geom FROM layers.manholes UNION ALL SELECT code, geom FROM "
                "layers.pump_stations UNION ALL SELECT code, geom FROM layers.outfalls UNION ALL SELECT code, geom "
                "FROM layers.treatment_plants) x WHERE code = :b))))"),
                {"code": f"G{k}", "flow": flow, "a": nodes[a], "b": target, "d": direction})
        drainage_graph.rebuild(conn)
