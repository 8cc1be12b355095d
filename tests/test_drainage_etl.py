"""Loading a drainage network: the two-file form (nodes + links by node codes, no geometry) through the real
`twin etl run`, network checks that quarantine errors with their reasons and flag suspicious pipes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from etl.jobs.drainage_pipes import SNAP_M
from etl.run import run_file
from tests.etl_support import REPO, drop_database, engine_for, private_database, quarantine, serve
from twin.auth import create_key

DB = "twin_drainage_etl"
TWIN = [str(Path(sys.executable).with_name("twin"))]
LON, LAT = 120.40, 31.50
STEP = 0.001  # about 100 m
NODES = [("J1", 0, 0), ("J2", 1, 0), ("J3", 2, 0), ("J4", 3, 0), ("J5", 3, 1), ("J6", 2, 1), ("J7", 0, 2)]
PUMP = ("P1", 4, 0)  # a pump station: a node of another layer
# code, from, to, flow type, direction, from invert, to invert
LINKS = [("L1", "J1", "J2", "重力", "正向", 3.0, 2.8),   # fine
         ("L2", "J2", "J3", "重力", "正向", 2.5, 2.9),   # rises along the flow: adverse_slope
         ("L3", "J4", "J3", "重力", "反向", 2.6, 2.9),   # drawn against the flow (J3 → J4), falls along it: fine
         ("L4", "J4", "J5", "重力", "正向", 2.5, 2.4),   # J4 → J5 → J6 → J4: a gravity cycle
         ("L5", "J5", "J6", "重力", "正向", 2.4, 2.3),
         ("L6", "J6", "J4", "重力", "正向", 2.3, 2.2),
         ("L7", "J3", "J7", "压力", "正向", None, None),  # J7: water arrives, nothing leaves: dangling
         ("L8", "J3", "J9", "重力", "正向", 2.0, 1.9),   # no node J9: quarantined
         ("L9", "J1", "J1", "重力", "正向", 2.0, 1.9),   # a loop on one node: quarantined
         ("L10", "P1", "J4", "压力", "正向", None, None)]  # from the pump station


@pytest.fixture(scope="module")
def site(database_url, tmp_path_factory):
    """(engine, environment for the CLI, folder of the files) on a private database."""
    url = private_database(database_url, DB)
    engine = engine_for(url)
    folder = tmp_path_factory.mktemp("two-files")
    yield engine, os.environ | {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(folder)}, folder
    engine.dispose()
    drop_database(database_url, DB)


@pytest.fixture(scope="module")
def db(site):
    return site[0]


def twin_etl(site, *args) -> tuple[int, int]:
    """(exit status, run id) of `twin etl run …`."""
    db, env, _ = site
    done = subprocess.run([*TWIN, "etl", "run", *args], env=env, cwd=REPO, capture_output=True, timeout=120)
    with db.connect() as conn:
        run = conn.execute(text("SELECT max(id) FROM twin.etl_run")).scalar()
    return done.returncode, run


def counts(db, run_id: int) -> dict:
    with db.connect() as conn:
        return dict(conn.execute(text("SELECT status, inserted, quarantined, error FROM twin.etl_run WHERE id = :id"),
                                 {"id": run_id}).mappings().one())


@pytest.fixture(scope="module")
def loaded(site):
    db, env, folder = site
    nodes = folder / "节点.csv"
    nodes.write_text("井编号,井类型,经度,纬度\n" + "".join(
        f"{code},污水,{LON + STEP * x:.6f},{LAT + STEP * y:.6f}\n" for code, x, y in NODES), "utf-8")
    pumps = folder / "泵站.csv"
    code, x, y = PUMP
    pumps.write_text(f"泵站编号,泵站名称,泵站类别,经度,纬度\n"
                     f"{code},一号泵站,污水,{LON + STEP * x:.6f},{LAT + STEP * y:.6f}\n", "utf-8")
    assert run_file(db, "drainage_nodes", pumps, layer="pump_stations").counts["inserted"] == 1
    links = folder / "管段.csv"
    links.write_text("管段编号,管道类型,起点编号,终点编号,压力类型,流向,起点管底高程,终点管底高程\n" + "".join(
        f"{c},污水,{a},{b},{f},{d},{'' if u is None else u},{'' if v is None else v}\n"
        for c, a, b, f, d, u, v in LINKS), "utf-8")
    status, run = twin_etl(site, "drainage_nodes", str(nodes), "--layer", "manholes")
    assert status == 0 and counts(db, run)["inserted"] == len(NODES)
    status, run = twin_etl(site, "drainage_pipes", str(links))
    assert status == 0, counts(db, run)
    return run


def test_the_two_file_form_loads_with_errors_quarantined(db, loaded):
    assert counts(db, loaded) | {"error": None} == {"status": "succeeded", "inserted": 8, "quarantined": 2,
                                                    "error": None}
    reasons = {row: reason for row, (reason, _) in quarantine(db, loaded).items()}
    assert reasons == {8: "pipe L8: 终点编号 (to_code) 'J9' is not a known manhole, pump station, treatment plant "
                          "or outfall; load the nodes first",
                       9: "pipe L9 starts and ends at node 'J1'"}
    with db.connect() as conn:
        ends = conn.execute(text("SELECT ST_X(a), ST_Y(a), ST_X(b), ST_Y(b) FROM layers.pipes, "
                                 "ST_StartPoint(ST_GeometryN(geom, 1)) a, ST_EndPoint(ST_GeometryN(geom, 1)) b "
                                 "WHERE code = 'L10'")).one()
    assert tuple(ends) == pytest.approx((LON + STEP * 4, LAT, LON + STEP * 3, LAT))  # from the pump station to J4


def test_a_links_file_needs_its_node_columns(site, db):
    bad = site[2] / "无端点.csv"
    bad.write_text("管段编号,管径\nX1,300\n", "utf-8")
    status, run = twin_etl(site, "drainage_pipes", str(bad))
    assert status == 1 and counts(db, run)["status"] == "failed"
    assert "has no 起点编号 (from_code) or 终点编号 (to_code) column" in counts(db, run)["error"]


def test_suspicious_pipes_are_flagged(db, loaded):
    with db.connect() as conn:
        flags = dict(conn.execute(text("SELECT code, flags FROM layers.pipes WHERE code LIKE 'L%'")).all())
    assert flags == {"L1": None, "L2": "adverse_slope", "L3": None, "L4": "gravity_cycle", "L5": "gravity_cycle",
                     "L6": "gravity_cycle", "L7": "dangling", "L10": None}


def test_a_links_file_loads_over_http(site, db, loaded):
    _, env, folder = site
    with db.begin() as conn:
        auth = {"Authorization": f"Bearer {create_key(conn, '水利局', ['pipes'])}"}
    body = "管段编号,管道类型,起点编号,终点编号,压力类型\nH1,污水,J6,J7,重力\nH2,污水,J6,J0,重力\n".encode("utf-8-sig")
    with serve(env["TWIN_DATABASE_URL"], folder) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.post("/etl/drainage_pipes", files={"file": ("links.csv", body)}, headers=auth)
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 30
        while (run := http.get(response.headers["Location"], headers=auth).json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert run["status"] == "succeeded" and run["counts"]["inserted"] == 1 and run["counts"]["quarantined"] == 1
        [rejected] = http.get(f"{response.headers['Location']}/quarantine", headers=auth).json()["items"]
    assert rejected["row"] == 2 and "'J0' is not a known manhole" in rejected["reason"]
    assert rejected["record"]["起点编号"] == "J6" and rejected["record"]["geometry"] is None


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
