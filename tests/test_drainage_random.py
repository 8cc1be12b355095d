"""The drainage traces on random networks — gravity and pressure pipes in any direction, two-way
pressure mains closing cycles, outfalls onto a river, sources beside manholes — equal a brute-force
networkx oracle (hypothesis draws the networks)."""

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.drainage_oracle import Graph, Traces, load_network, same
from tests.etl_support import drop_database, engine_for, private_database


@pytest.fixture(scope="module")
def scratch(database_url):
    url = private_database(database_url, "twin_drainage_random")
    engine = engine_for(url)
    traces = Traces(url)
    yield engine, traces
    traces.close()
    engine.dispose()
    drop_database(database_url, "twin_drainage_random")


networks = st.integers(4, 14).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from(["重力", "压力"]),
                       st.sampled_from(["正向", "反向", "双向", None])), min_size=1, max_size=3 * n),
    st.sets(st.integers(0, n - 1), max_size=3),  # nodes that are outfalls onto the river
    st.sets(st.integers(0, n - 1), max_size=2),  # nodes that are pump stations
    st.sets(st.integers(0, n - 1), max_size=3),  # manholes with a pollution source beside them
))


# no shrinking: each example loads a database, and the failing network is noted as drawn
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(networks)
def test_traces_equal_the_oracle_on_random_networks(scratch, network):
    engine, traces = scratch
    n, pipes, outfalls, pumps, sources = network
    note(repr(network))
    load_network(engine, n, pipes, outfalls, pumps, sources)
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
    load_network(engine, 3, [(0, 1, "重力", None)], set(), set(), set())
    assert not traces.refresh()  # built by _load, nothing changed since
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.pipes (code, kind, flow_type, from_code, to_code, geom) SELECT 'G-new', "
                          "'污水', '重力', 'N1', 'N2', ST_Multi(ST_MakeLine(a.geom, b.geom)) FROM layers.manholes a, "
                          "layers.manholes b WHERE a.code = 'N1' AND b.code = 'N2'"))
        fid = conn.execute(text("SELECT fid FROM layers.manholes WHERE code = 'N2'")).scalar()
    assert traces.refresh() and not traces.refresh()
    assert len(traces("upstream", "manholes", fid).features["pipes"]) == 2
