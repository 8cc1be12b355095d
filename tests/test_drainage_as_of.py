"""POST /query/trace with `as_of` traces the network as it was then: pipes deleted, turned round and
added after the moment change the answer now but not the answer as of the moment; both equal the
networkx oracle of their network."""

import httpx
import pytest
from sqlalchemy import text

from layers.drainage_graph import rebuild
from tests.drainage_oracle import Graph, load_network, same
from tests.etl_support import drop_database, engine_for, private_database, serve

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
