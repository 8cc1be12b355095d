"""POST /query/trace with `as_of` traces the network as it was then: pipes deleted, turned round and
added after the moment change the answer now but not the answer as of the moment; both equal the
networkx oracle of their network. The graph then is the graph now with the changes undone (one pipe;
pipes, manholes, an outfall; a manhole a source drains to; the river, a station, a source): the same
graph as one built whole from the layers then, answering every trace as the oracle; when the graph now
is older than the layers, or too much changed, the graph then is built whole instead."""

import asyncio

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from layers import drainage_graph, drainage_layers, drainage_trace
from layers.drainage_graph import rebuild
from layers.drainage_layers import ID_BITS, JUNCTION
from tests.drainage_oracle import Graph, load_network, same
from tests.etl_support import database_fixture, drop_database, engine_for, private_database, serve

# N3 a pump station (a force main G3 to the plant), N6 an outfall; sources beside N0 and N1
PIPES = [(0, 1, "重力", None), (1, 3, "重力", None), (2, 3, "重力", None), (3, 3, "压力", None),
         (4, 6, "重力", None), (5, 4, "重力", None)]
TRACES = [("upstream", "pump_stations", "N3"), ("service_area", "pump_stations", "N3"),
          ("downstream", "manholes", "N2"), ("upstream", "outfalls", "N6")]


@pytest.fixture(scope="module")
def changed(database_url, data_dir):
    """The network, its oracle and a moment; then the network changed after it, and its oracle now."""
    url = private_database(database_url, "twin_drainage_as_of")
    engine = engine_for(url)
    load_network(engine, 7, PIPES, outfalls={6}, pumps={3}, sources={0, 1})
    before = Graph(engine)
    with engine.connect() as conn:
        moment = conn.execute(text("SELECT now()")).scalar()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.pipes WHERE code = 'G2'"))  # N2 no longer drains to the pump
        conn.execute(text("UPDATE layers.pipes SET direction = '反向' WHERE code = 'G5'"))  # N4 now drains to N5
        conn.execute(text("INSERT INTO layers.pipes (code, kind, flow_type, from_code, to_code, geom) SELECT 'G9', "
                          "'雨水', '重力', 'N2', 'N6', ST_Multi(ST_MakeLine(a.geom, b.geom)) FROM layers.manholes a, "
                          "layers.outfalls b WHERE a.code = 'N2' AND b.code = 'N6'"))
        rebuild(conn)
    after = Graph(engine)
    with serve(url, data_dir) as base:
        yield base, engine, moment, before, after
    engine.dispose()
    drop_database(database_url, "twin_drainage_as_of")


def _fid(engine, layer: str, code: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT fid FROM layers.{layer} WHERE code = :c"), {"c": code}).scalar()


def _traced(base: str, direction: str, layer: str, code: str, **extra) -> dict[str, dict[int, float]]:
    body = {"feature": {"layer": layer, "where": {"code": code}}, "direction": direction, "geometries": False,
            "limit": 10_000, **extra}
    response = httpx.post(f"{base}/query/trace", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return {name: {f["id"]: f["properties"]["distance_m"] for f in value["features"]}
            for name, value in response.json().items() if isinstance(value, dict) and "features" in value}


def _expected(graph: Graph, direction: str, fid: int, layer: str) -> dict[str, dict[int, float]]:
    if direction == "service_area":
        return graph.lost(layer, fid)
    return graph.reach(layer, fid, upstream=direction == "upstream")


@pytest.mark.parametrize("direction, layer, code", TRACES)
def test_a_trace_as_of_a_moment_is_the_network_then(changed, direction, layer, code):
    base, engine, moment, before, after = changed
    fid = _fid(engine, layer, code)
    then = _traced(base, direction, layer, code, as_of=moment.isoformat())
    now = _traced(base, direction, layer, code)
    same(then, _expected(before, direction, fid, layer))
    same(now, _expected(after, direction, fid, layer))
    assert then != now  # every trace here crosses a change


def test_as_of_after_the_last_change_is_the_network_now(changed):
    base, engine, _, _, after = changed
    with engine.connect() as conn:
        latest = conn.execute(text("SELECT max(updated_at) FROM layers.pipes")).scalar()
    same(_traced(base, "downstream", "manholes", "N2", as_of=latest.isoformat()),
         after.reach("manholes", _fid(engine, "manholes", "N2"), upstream=False))


def test_a_trace_as_of_before_its_start_existed_is_refused(changed):
    base, engine, moment, _, _ = changed
    with engine.begin() as conn:
        created = conn.execute(text("SELECT min(updated_at) FROM layers.manholes")).scalar()
    body = {"feature": {"layer": "manholes", "where": {"code": "N2"}}, "direction": "upstream",
            "as_of": (created.replace(year=created.year - 1)).isoformat()}
    response = httpx.post(f"{base}/query/trace", json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "not_one_feature"
    bad = httpx.post(f"{base}/query/trace", json=body | {"as_of": "yesterday"}, timeout=60)
    assert bad.status_code == 400 and "as_of" in bad.text


# Changes after the moment, each undone by build_at from the graph now (layers.drainage_past); the graph then
# must be the one built whole from the layers then (rebuild_at) and answer as the oracle of the network then.
LONGER = ("UPDATE layers.pipes SET geom = ST_Multi(ST_MakeLine(ARRAY[ST_StartPoint(ST_GeometryN(geom, 1)), "
          "ST_Translate(ST_Centroid(geom), 0, 0.0005), ST_EndPoint(ST_GeometryN(geom, 1))])) WHERE code = 'G1'")
PIPE = ("INSERT INTO layers.pipes (code, kind, flow_type, from_code, to_code, geom) SELECT :code, '污水', '重力', "
        ":a, :b, ST_Multi(ST_MakeLine(a.geom, b.geom)) FROM (SELECT code, geom FROM layers.manholes UNION ALL "
        "SELECT code, geom FROM layers.outfalls) a, (SELECT code, geom FROM layers.manholes UNION ALL "
        "SELECT code, geom FROM layers.pump_stations) b WHERE a.code = :a AND b.code = :b")
CHANGES = {
    "one pipe longer": [(LONGER, {})],
    "pipes deleted, turned round and added": [
        ("DELETE FROM layers.pipes WHERE code = 'G2'", {}),
        ("UPDATE layers.pipes SET direction = '反向' WHERE code = 'G5'", {}),
        (PIPE, {"code": "G9", "a": "N2", "b": "N4"})],
    "manholes deleted, renamed and added, an outfall moved off the river": [
        ("DELETE FROM layers.manholes WHERE code = 'N5'", {}),
        ("UPDATE layers.manholes SET code = 'N4x' WHERE code = 'N4'", {}),  # its pipes join nothing now
        ("INSERT INTO layers.manholes (code, kind, geom) SELECT 'N4', '污水', ST_Translate(geom, 0, 0.001) "
         "FROM layers.manholes WHERE code = 'N2'", {}),  # G4 now runs from a new N4
        ("UPDATE layers.outfalls SET river_code = NULL, geom = ST_Translate(geom, 0, 0.01)", {})],
    "a manhole a source drains to turned to storm water": [
        ("UPDATE layers.manholes SET kind = '雨水' WHERE code = 'N1'", {})],
    "the river, a station and a source moved": [
        ("UPDATE layers.rivers SET geom = ST_Translate(geom, 0, 0.001)", {}),
        ("UPDATE layers.monitoring_stations SET geom = ST_Translate(geom, -0.004, 0.001)", {}),
        ("UPDATE layers.pollution_sources SET geom = ST_Translate(geom, 0.002, 0) "
         "WHERE fid = (SELECT min(fid) FROM layers.pollution_sources)", {})],
}


scratch = database_fixture("twin_drainage_undo")


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _changed(engine, changes, graph_now: bool = True):
    """The network loaded, its oracle and a moment; then `changes` (and the graph rebuilt when graph_now)."""
    load_network(engine, 7, PIPES, outfalls={6}, pumps={3}, sources={0, 1})
    before = Graph(engine)
    with engine.connect() as conn:
        moment = conn.execute(text("SELECT now()")).scalar()
    with engine.begin() as conn:
        for sql, values in changes:
            assert conn.execute(text(sql), values).rowcount > 0, sql
        if graph_now:
            rebuild(conn)
    return before, moment


def _starts(graph: Graph) -> list[tuple[str, str, int]]:
    """(direction, layer, fid) of every trace from every feature then."""
    ids = drainage_layers.layer_ids()
    nodes = [(ids[role], fid) for role, fid, _ in graph.nodes.values() if role in drainage_trace.STARTS and fid]
    pipes = sorted({(ids["pipes"], e.fid) for e in graph.edges if e.layer in ("gravity", "pressure")})
    found = [(kind, layer, fid) for layer, fid in nodes + pipes for kind in ("upstream", "downstream")]
    return found + [("service_area", layer, fid) for layer, fid in nodes + pipes
                    if drainage_layers.role_of(layer) in drainage_trace.FAILING]


def _then(url: str, moment, build, starts) -> tuple[str, list, list, dict]:
    """On the graph `build` makes of the network at `moment`: its relkind ('v': views over the graph now), its
    nodes and edges (the river's junctions unnamed: numbered by the build) and the traces from `starts`."""
    junction = f"CASE WHEN {{end}} >> {ID_BITS} = {JUNCTION} THEN -1 ELSE {{end}} END"

    async def run():
        engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            async with engine.connect() as conn:
                net = await build(conn, moment)
                kind = (await conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
                                           {"t": net.edge})).scalar()
                nodes = sorted(map(tuple, await conn.execute(text(
                    f"SELECT id, layer, fid, code FROM {net.node} WHERE id >> {ID_BITS} <> {JUNCTION}"))))
                edges = sorted(map(tuple, await conn.execute(text(
                    f"SELECT layer, fid, {junction.format(end='source')}, {junction.format(end='target')}, "
                    f"round(cost::numeric, 6), round(reverse_cost::numeric, 6) FROM {net.edge}"))))
                traces = {}
                for direction, layer, fid in starts:
                    trace = getattr(drainage_trace, direction)
                    traces[direction, layer, fid] = (await trace(conn, layer, fid, network=net)).features
                await conn.rollback()
            return kind, nodes, edges, traces
        finally:
            await engine.dispose()
    return asyncio.run(run())


async def _now(conn, moment):
    return drainage_layers.now()


@pytest.mark.parametrize("changes", CHANGES.values(), ids=CHANGES)
def test_the_graph_then_is_the_graph_now_with_the_changes_undone(scratch, changes):
    engine, url = scratch, _url(scratch)
    before, moment = _changed(engine, changes)
    starts = _starts(before)
    kind, nodes, edges, traces = _then(url, moment, drainage_graph.build_at, starts)
    assert kind == "v"  # the graph now, changes undone
    assert (nodes, edges) != _then(url, moment, _now, [])[1:3]
    whole = _then(url, moment, drainage_graph.rebuild_at, [])
    assert whole[0] == "r" and (nodes, edges) == whole[1:3]
    for (direction, layer, fid), found in traces.items():
        same(found, _expected(before, direction, fid, layer))


@pytest.mark.parametrize("why", ["the graph is older than the layers", "more versions changed than UNDO_MAX"])
def test_the_graph_then_is_built_whole_when_it_cannot_be_undone(scratch, monkeypatch, why):
    engine, url = scratch, _url(scratch)
    older = why == "the graph is older than the layers"
    before, moment = _changed(engine, CHANGES["pipes deleted, turned round and added"], graph_now=not older)
    if not older:
        monkeypatch.setattr(drainage_graph, "UNDO_MAX", 3)  # G2 then, G5 then and now, G9 now: 4 versions
    kind, _, _, traces = _then(url, moment, drainage_graph.build_at, _starts(before))
    assert kind == "r"
    for (direction, layer, fid), found in traces.items():
        same(found, _expected(before, direction, fid, layer))
