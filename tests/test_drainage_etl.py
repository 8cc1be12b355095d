"""Loading a drainage network: the two-file form (nodes + links by node codes), network checks that
quarantine errors with their reasons and flag suspicious pipes."""

import json

import pytest
from sqlalchemy import text

from etl.jobs.drainage_pipes import SNAP_M, linked
from etl.readers import read
from etl.run import run_dataset, run_file
from tests.etl_support import database_fixture, quarantine

db = database_fixture("twin_drainage_etl")

LON, LAT = 120.40, 31.50
STEP = 0.001  # about 100 m
NODES = [("J1", 0, 0), ("J2", 1, 0), ("J3", 2, 0), ("J4", 3, 0), ("J5", 3, 1), ("J6", 2, 1), ("J7", 0, 2)]
# code, from, to, flow type, direction, from invert, to invert
LINKS = [("L1", "J1", "J2", "重力", "正向", 3.0, 2.8),   # fine
         ("L2", "J2", "J3", "重力", "正向", 2.5, 2.9),   # rises along the flow: adverse_slope
         ("L3", "J4", "J3", "重力", "反向", 2.6, 2.9),   # drawn against the flow (J3 → J4), falls along it: fine
         ("L4", "J4", "J5", "重力", "正向", 2.5, 2.4),   # J4 → J5 → J6 → J4: a gravity cycle
         ("L5", "J5", "J6", "重力", "正向", 2.4, 2.3),
         ("L6", "J6", "J4", "重力", "正向", 2.3, 2.2),
         ("L7", "J3", "J7", "压力", "正向", None, None),  # J7: water arrives, nothing leaves: dangling
         ("L8", "J3", "J9", "重力", "正向", 2.0, 1.9),   # no node J9: quarantined
         ("L9", "J1", "J1", "重力", "正向", 2.0, 1.9)]   # a loop on one node: quarantined


@pytest.fixture(scope="module")
def loaded(db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-files")
    nodes = folder / "节点.csv"
    nodes.write_text("井编号,井类型,经度,纬度\n" + "".join(
        f"{code},污水,{LON + STEP * x:.6f},{LAT + STEP * y:.6f}\n" for code, x, y in NODES), "utf-8")
    links = folder / "管段.csv"
    links.write_text("管段编号,管道类型,起点编号,终点编号,压力类型,流向,起点管底高程,终点管底高程\n" + "".join(
        f"{c},污水,{a},{b},{f},{d},{'' if u is None else u},{'' if v is None else v}\n"
        for c, a, b, f, d, u, v in LINKS), "utf-8")
    nodes_run = run_file(db, "drainage_nodes", nodes, layer="manholes")
    assert nodes_run.status == "succeeded" and nodes_run.counts["inserted"] == len(NODES), nodes_run
    result = run_dataset(db, "drainage_pipes", linked(read(links), read(nodes), code="井编号", from_code="起点编号",
                                                         to_code="终点编号"),
                         layer="pipes", file_name=links.name, sha="two-files")
    assert result.status == "succeeded", result.error
    return result


def test_the_two_file_form_loads_with_errors_quarantined(db, loaded):
    assert loaded.counts["inserted"] == 7 and loaded.counts["quarantined"] == 2
    reasons = " | ".join(reason for reason, _ in quarantine(db, loaded.run_id).values())
    assert "'J9' is not in the nodes file" in reasons
    assert "link J1 → J1 starts and ends at node 'J1'" in reasons


def test_suspicious_pipes_are_flagged(db, loaded):
    with db.connect() as conn:
        flags = dict(conn.execute(text("SELECT code, flags FROM layers.pipes")).all())
    assert flags == {"L1": None, "L2": "adverse_slope", "L3": None, "L4": "gravity_cycle", "L5": "gravity_cycle",
                     "L6": "gravity_cycle", "L7": "dangling"}


def test_ends_must_snap_to_their_nodes(db, loaded, tmp_path):
    far = STEP * 0.5  # about 50 m off
    features = [{"type": "Feature", "properties": {"code": code, "kind": "污水", "flow_type": "重力", "from_code": a,
                                                   "to_code": b},
                 "geometry": {"type": "LineString", "coordinates": [[LON, LAT], [LON + STEP + shift, LAT]]}}
                for code, a, b, shift in (("S1", "J1", "J2", 0.0), ("S2", "J1", "J2", far), ("S3", "J1", "J8", 0.0))]
    path = tmp_path / "pipes.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    result = run_file(db, "drainage_pipes", path)
    assert result.counts["inserted"] == 1 and result.counts["quarantined"] == 2
    reasons = sorted(reason for reason, _ in quarantine(db, result.run_id).values())
    assert f"more than the {SNAP_M} m snapping tolerance" in reasons[0] and "pipe S2: its end lies" in reasons[0]
    assert "'J8' is not a known manhole" in reasons[1]
