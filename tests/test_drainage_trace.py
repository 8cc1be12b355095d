"""The drainage traces on the sample network: pgRouting's answers equal a brute-force networkx oracle,
and POST /query/trace serves them."""

import random

import pytest
from sqlalchemy import text

from etl.run import run_file
from etl.sample import generate
from layers.drainage_graph import rebuild
from tests.drainage_oracle import Graph, Traces, same
from tests.etl_support import drop_database, engine_for, private_database, serve

NETWORK_LOADS = [("rivers", "rivers", None), ("monitoring_stations", "monitoring_stations", None),
                 ("pollution_sources", "pollution_sources", "GCJ02"), ("drainage_nodes", "manholes", None),
                 ("drainage_nodes", "pump_stations", None), ("drainage_nodes", "treatment_plants", None),
                 ("drainage_nodes", "outfalls", None), ("drainage_nodes", "gates", None),
                 ("drainage_pipes", "pipes", None)]


@pytest.fixture(scope="module")
def network(database_url, tmp_path_factory):
    """A private database holding the sample's rivers, stations, sources and drainage network."""
    files = generate(tmp_path_factory.mktemp("sample"), components=1500, days=1)
    url = private_database(database_url, "twin_drainage")
    engine = engine_for(url)
    for job, layer, crs in NETWORK_LOADS:
        result = run_file(engine, job, files[layer], layer=layer, crs=crs)
        assert result.status == "succeeded", (layer, result.error)
    with engine.begin() as conn:
        rebuild(conn)
    traces = Traces(url)
    yield url, engine, Graph(engine), traces
    traces.close()
    engine.dispose()
    drop_database(database_url, "twin_drainage")


def _fids(engine, layer, n, seed=1) -> list[int]:
    with engine.connect() as conn:
        fids = conn.execute(text(f"SELECT fid FROM layers.{layer} ORDER BY fid")).scalars().all()
    return sorted(random.Random(seed).sample(fids, min(n, len(fids))))


def test_the_sample_is_a_plausible_network(network):
    _, engine, graph, _ = network
    with engine.connect() as conn:
        pipes = conn.execute(text("SELECT count(*), count(*) FILTER (WHERE flow_type = '压力'), "
                                  "count(*) FILTER (WHERE direction = '双向') FROM layers.pipes")).one()
        linked = conn.execute(text("SELECT count(*) FILTER (WHERE component_code IS NOT NULL) FROM layers.manholes")
                              ).scalar()
    assert pipes[0] > 3000 and pipes[1] > 10 and pipes[2] == 1
    assert linked > 0
    plants = [n for n, (layer, _, _) in graph.nodes.items() if layer == "treatment_plants"]
    rivers = {n for n, (layer, _, _) in graph.nodes.items() if layer == "rivers"}
    for plant in plants:  # every plant discharges to a river
        assert rivers & set(graph.distances([plant], upstream=False))


@pytest.mark.parametrize("layer, n", [("pump_stations", 12), ("monitoring_stations", 12), ("outfalls", 6),
                                      ("manholes", 6), ("pipes", 6), ("treatment_plants", 2)])
def test_upstream_equals_the_oracle(network, layer, n):
    _, engine, graph, traces = network
    for fid in _fids(engine, layer, n):
        if graph.starts(layer, fid, True):
            same(traces("upstream", layer, fid).features, graph.reach(layer, fid, upstream=True))


@pytest.mark.parametrize("layer, n", [("manholes", 10), ("pollution_sources", 10), ("pipes", 5)])
def test_downstream_equals_the_oracle_and_reaches_an_outlet(network, layer, n):
    _, engine, graph, traces = network
    for fid in _fids(engine, layer, n):
        if not graph.starts(layer, fid, False):
            continue
        reach = traces("downstream", layer, fid)
        same(reach.features, graph.reach(layer, fid, upstream=False))
        if reach.outlet is not None:
            outlet_layer, outlet_fid, metres, _ = reach.outlet
            assert reach.features[outlet_layer][outlet_fid] == pytest.approx(metres)
            assert reach.path and reach.path[-1][2] == pytest.approx(metres)


def test_a_distance_bounds_the_trace(network):
    _, engine, graph, traces = network
    for fid in _fids(engine, "pump_stations", 5, seed=2):
        same(traces("upstream", "pump_stations", fid, 400.0).features,
             graph.reach("pump_stations", fid, upstream=True, distance=400.0))


@pytest.mark.parametrize("layer, n", [("pump_stations", 8), ("pipes", 10)])
def test_service_area_equals_the_oracle(network, layer, n):
    _, engine, graph, traces = network
    for fid in _fids(engine, layer, n, seed=3):
        same(traces("service_area", layer, fid).features, graph.lost(layer, fid))


def test_a_sewage_manhole_drains_to_a_plant_and_its_river(network):
    _, engine, _, traces = network
    with engine.connect() as conn:
        fid = conn.execute(text("SELECT fid FROM layers.manholes WHERE kind = '污水' ORDER BY fid LIMIT 1")).scalar()
    reach = traces("downstream", "manholes", fid)
    assert reach.outlet[0] == "treatment_plants"
    assert reach.features["pump_stations"] and reach.features["rivers"]


@pytest.fixture(scope="module")
def served(network, data_dir):
    url, *_ = network
    with serve(url, data_dir) as base:
        yield base


def test_http_trace_from_a_pump_station(network, served):
    import httpx

    _, engine, graph, _ = network
    with engine.connect() as conn:
        code, fid = conn.execute(text("SELECT code, fid FROM layers.pump_stations ORDER BY fid LIMIT 1")).one()
    body = {"feature": {"layer": "pump_stations", "where": {"code": code}}, "direction": "upstream", "limit": 5}
    got = httpx.post(f"{served}/query/trace", json=body, timeout=30).json()
    expected = graph.reach("pump_stations", fid, upstream=True)
    assert got["start"] == {"layer": "pump_stations", "fid": fid, "code": code}
    assert got["pipes"]["numberMatched"] == len(expected["pipes"])
    assert [f["properties"]["distance_m"] for f in got["pipes"]["features"]] == \
        pytest.approx(sorted(expected["pipes"].values())[:5])
    area = httpx.post(f"{served}/query/trace", json=body | {"direction": "service_area"}, timeout=30).json()
    assert area["streets"] == [] or area["streets"][0]["manholes"] > 0
    assert area["manholes"]["numberMatched"] == len(graph.lost("pump_stations", fid).get("manholes", {}))


@pytest.mark.parametrize("body, status, code", [
    ({"feature": {"layer": "roads", "where": {}}, "direction": "upstream"}, 422, "not_a_network_layer"),
    ({"feature": {"layer": "manholes", "where": {"code": "NOPE"}}, "direction": "upstream"}, 422, "not_one_feature"),
    ({"feature": {"layer": "manholes", "where": {"code": "x"}}, "direction": "service_area"}, 422,
     "not_a_network_layer"),
    ({"feature": {"layer": "pipes", "where": {"code": "x"}}, "direction": "upstream", "as_of": "2026-01-01"}, 400,
     "invalid_parameter"),
    ({"feature": {"layer": "pipes", "where": {}}, "point": [120.4, 31.5], "direction": "upstream"}, 400,
     "invalid_parameter"),
])
def test_http_trace_refuses_with_reasons(served, body, status, code):
    import httpx

    response = httpx.post(f"{served}/query/trace", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_clicking_a_pump_station_in_the_viewer_highlights_its_upstream(network, served, tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    from tests.test_viewer import IDLE, Page, chromium

    _, engine, graph, _ = network
    with engine.connect() as conn:
        fid, lng, lat = conn.execute(text("SELECT fid, ST_X(geom), ST_Y(geom) FROM layers.pump_stations "
                                          "ORDER BY fid LIMIT 1")).one()
    expected = graph.reach("pump_stations", fid, upstream=True)
    with chromium(tmp_path_factory.mktemp("chromium"), viewport={"width": 1024, "height": 700}) as context:
        viewer = Page(context, served)
        viewer.open(f"map=16/{lat}/{lng}&layers=pump_stations")
        viewer.page.evaluate(IDLE)
        viewer.click_lnglat(lng, lat)
        viewer.page.wait_for_function("document.body.dataset.drainageTrace !== undefined", timeout=15_000)
        shown = int(viewer.page.evaluate("document.body.dataset.drainageTrace"))
    drawn = ("pipes", "rivers", "outfalls", "pump_stations", "pollution_sources")  # what drainage.js draws
    assert shown == sum(len(expected.get(layer, {})) for layer in drawn) > 1


def test_a_catalog_without_a_layer_for_a_role_says_which():
    from layers import catalog, drainage_layers

    before = dict(catalog.catalog())
    catalog.install({i: s for i, s in before.items() if s.network != "gates"})
    try:
        with pytest.raises(drainage_layers.NetworkIncomplete) as refused:
            drainage_layers.now()
        assert refused.value.status == 409 and "'gates'" in refused.value.detail
    finally:
        catalog.install(before)
    assert drainage_layers.layer_id("stations") == "monitoring_stations"
