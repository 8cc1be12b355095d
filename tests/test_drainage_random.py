"""The drainage traces on random networks — gravity and pressure pipes in any direction, two-way
pressure mains closing cycles, outfalls onto a river, sources beside manholes — equal a brute-force
networkx oracle (hypothesis draws the networks)."""

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import text

from layers.drainage_graph import rebuild
from tests.drainage_oracle import Graph, Traces, same
from tests.etl_support import drop_database, engine_for, private_database

LON, LAT = 120.40, 31.50
STEP = 0.001  # about 100 m between grid points
LAYERS = ("pipes", "manholes", "pump_stations", "treatment_plants", "outfalls", "gates", "rivers",
          "monitoring_stations", "pollution_sources")


@pytest.fixture(scope="module")
def scratch(database_url):
    url = private_database(database_url, "twin_drainage_random")
    engine = engine_for(url)
    traces = Traces(url)
    yield engine, traces
    traces.close()
    engine.dispose()
    drop_database(database_url, "twin_drainage_random")


def _point(i: int) -> str:
    return f"SRID=4490;POINT({LON + STEP * (i % 7)} {LAT + STEP * (i // 7)})"


networks = st.integers(4, 14).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from(["重力", "压力"]),
                       st.sampled_from(["正向", "反向", "双向", None])), min_size=1, max_size=3 * n),
    st.sets(st.integers(0, n - 1), max_size=3),  # nodes that are outfalls onto the river
    st.sets(st.integers(0, n - 1), max_size=2),  # nodes that are pump stations
    st.sets(st.integers(0, n - 1), max_size=3),  # manholes with a pollution source beside them
))


def _load(engine, n, pipes, outfalls, pumps, sources):
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
                              "ST_GeomFromEWKT(:g))"), {"code": f"N{i}", "g": _point(i)})
            if i in sources and layer == "manholes":
                conn.execute(text("INSERT INTO layers.pollution_sources (credit_code, name, permit_class, geom) "
                                  "VALUES (:code, '企业', '登记管理', ST_Translate(ST_GeomFromEWKT(:g), 0.0001, 0))"),
                             {"code": f"91320214MA{i:08d}", "g": _point(i)})
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
        rebuild(conn)


# no shrinking: each example loads a database, and the failing network is noted as drawn
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(networks)
def test_traces_equal_the_oracle_on_random_networks(scratch, network):
    engine, traces = scratch
    n, pipes, outfalls, pumps, sources = network
    note(repr(network))
    _load(engine, n, pipes, outfalls, pumps, sources)
    graph = Graph(engine)
    with engine.connect() as conn:
        starts = conn.execute(text(
            "SELECT 'manholes', fid FROM layers.manholes UNION ALL SELECT 'pump_stations', fid FROM "
            "layers.pump_stations UNION ALL SELECT 'outfalls', fid FROM layers.outfalls UNION ALL "
            "SELECT 'monitoring_stations', fid FROM layers.monitoring_stations UNION ALL "
            "SELECT 'pollution_sources', fid FROM layers.pollution_sources UNION ALL "
            "SELECT 'pipes', fid FROM layers.pipes")).all()
    for layer, fid in starts[::max(1, len(starts) // 10)]:
        same(traces("upstream", layer, fid).features, graph.reach(layer, fid, upstream=True))
        same(traces("downstream", layer, fid).features, graph.reach(layer, fid, upstream=False))
        if layer in ("pump_stations", "pipes"):
            same(traces("service_area", layer, fid).features, graph.lost(layer, fid))


def test_a_trace_after_a_change_rebuilds_the_graph(scratch):
    engine, traces = scratch
    _load(engine, 3, [(0, 1, "重力", None)], set(), set(), set())
    assert not traces.refresh()  # built by _load, nothing changed since
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.pipes (code, kind, flow_type, from_code, to_code, geom) SELECT 'G-new', "
                          "'污水', '重力', 'N1', 'N2', ST_Multi(ST_MakeLine(a.geom, b.geom)) FROM layers.manholes a, "
                          "layers.manholes b WHERE a.code = 'N1' AND b.code = 'N2'"))
        fid = conn.execute(text("SELECT fid FROM layers.manholes WHERE code = 'N2'")).scalar()
    assert traces.refresh() and not traces.refresh()
    assert len(traces("upstream", "manholes", fid).features["pipes"]) == 2
