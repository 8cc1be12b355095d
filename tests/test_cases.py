"""The case loop over HTTP against the loaded district: report, routing, the steps and their history, roles and
scopes (cases and component writes), 409s, races, duplicates, idempotency, statistics."""

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.case_support import fresh, jpeg_with_gps, key, places, report, step


@pytest.fixture(scope="module")
def where(engine, loaded):
    return places(engine)


@pytest.fixture(scope="module")
def keys(engine, loaded):
    return {"dispatcher": key(engine, "数字城管指挥中心", "dispatcher"),
            "supervisor": key(engine, "数字城管指挥中心", "supervisor"),
            "hotline": key(engine, "12345热线", "reporter"),
            "plain": key(engine, "生态环境局", None, ["pollution_sources"])}


def handler(engine, department: str, role: str = "department", **scope) -> dict:
    return key(engine, department, role, **scope)


def registered(http, keys, place, class_code="E0102"):
    created = report(http, fresh(place), class_code, headers=keys["supervisor"])
    assert created.status_code == 201, created.text
    case = created.json()
    assert step(http, case["case_no"], "register", keys["dispatcher"]).status_code == 200
    return case


def test_the_whole_loop_with_rework_is_recorded_step_by_step(http, engine, keys, where):
    place = where[0]
    created = report(http, fresh(place), "E0102", headers=keys["supervisor"], contact={"phone": "13800000000"})
    assert created.status_code == 201, created.text
    case = created.json()
    no = case["case_no"]
    assert case["state"] == "上报" and case["source"] == "监督员"
    assert (case["grid_code"], case["street_code"]) == (place["grid"], place["street"])
    with engine.connect() as conn:  # E01 in a street goes to that street's office (the responsibility table)
        expected = conn.execute(text("SELECT department FROM cases.responsibility WHERE class_prefix = 'E01' "
                                     "AND area = :s"), {"s": place["street"]}).scalar()
    assert case["department"] == expected
    department = handler(engine, expected)
    for action, by, extra, state in [("register", "dispatcher", {}, "立案"), ("dispatch", "dispatcher", {}, "派遣"),
                                     ("accept", department, {}, "处置"),
                                     ("feedback", department, {"note": "已清理"}, "反馈"),
                                     ("rework", "supervisor", {"note": "仍有垃圾"}, "处置"),
                                     ("feedback", department, {"note": "已彻底清理"}, "反馈"),
                                     ("verify", "supervisor", {}, "核查"), ("close", "dispatcher", {}, "结案")]:
        headers = keys[by] if isinstance(by, str) else by
        response = step(http, no, action, headers, **extra)
        assert response.status_code == 200, (action, response.text)
        assert response.json()["state"] == state
    detail = http.get(f"/cases/{no}", headers=keys["dispatcher"]).json()
    assert [s["action"] for s in detail["steps"]] == ["report", "register", "dispatch", "accept", "feedback", "rework",
                                                      "feedback", "verify", "close"]
    assert detail["rework"] == 1 and detail["closed_at"] and detail["contact"] == {"phone": "13800000000"}
    assert all(s["at"] for s in detail["steps"]) and detail["steps"][3]["department"] == expected
    fid = http.get("/collections/cases/items", params={"filter": f"case_no = '{no}'"}).json()["features"][0]["id"]
    history = http.get(f"/collections/cases/items/{fid}/history").json()
    versions = history.get("versions", history.get("features", []))
    assert len(versions) == 9  # one version per step, report included
    with engine.connect() as conn:
        actors = conn.execute(text("SELECT actor FROM twin.change WHERE layer = 'cases' AND fid = :f ORDER BY version"),
                              {"f": fid}).scalars().all()
    assert actors[0].startswith("数字城管指挥中心/") and any(a.startswith(expected) for a in actors)


def test_an_illegal_step_is_409_with_the_allowed_ones(http, keys, where):
    no = report(http, fresh(where[1]), headers=keys["supervisor"]).json()["case_no"]
    response = step(http, no, "close", keys["dispatcher"])
    assert response.status_code == 409
    assert response.json()["code"] == "illegal_transition"
    assert "register, reject" in response.json()["description"]
    assert step(http, no, "reject", keys["dispatcher"]).json()["code"] == "missing_note"
    assert step(http, no, "register", keys["supervisor"]).status_code == 403  # wrong role
    assert step(http, no, "register", keys["plain"]).json()["code"] == "no_loop_role"


def test_two_handlers_racing_one_wins(http, engine, keys, where, server):
    import httpx

    case = registered(http, keys, where[2], "E0301")  # 施工管理 → 住建局
    no = case["case_no"]
    assert step(http, no, "dispatch", keys["dispatcher"]).status_code == 200
    a, b = handler(engine, case["department"]), handler(engine, case["department"])
    results, barrier = [], threading.Barrier(2)

    def accept(headers):
        with httpx.Client(base_url=server, timeout=30) as client:
            barrier.wait()
            results.append(step(client, no, "accept", headers).status_code)

    threads = [threading.Thread(target=accept, args=(h,)) for h in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]


def test_a_department_may_return_a_case_to_dispatch(http, engine, keys, where):
    case = registered(http, keys, where[3], "E0505")
    no = case["case_no"]
    assert step(http, no, "dispatch", keys["dispatcher"], department="新吴区城市管理局").json()["department"] == \
        "新吴区城市管理局"
    other = handler(engine, "新吴区公安分局交警大队")
    assert step(http, no, "accept", other).status_code == 403  # not its case
    own = handler(engine, "新吴区城市管理局")
    back = step(http, no, "return", own, note="机动车乱停放归交警")
    assert back.status_code == 200 and back.json()["state"] == "立案" and back.json()["department"] is None
    again = step(http, no, "dispatch", keys["dispatcher"])
    assert again.json()["department"] == "新吴区公安分局交警大队"


def test_scoped_contractor_sees_and_writes_only_its_grids_and_classes(http, engine, keys, where):
    with engine.connect() as conn:
        lamps = conn.execute(text(
            "SELECT c.fid, c.code, g.code AS grid FROM layers.city_components c JOIN layers.grids g "
            "ON ST_Intersects(g.geom, c.geom) WHERE substr(c.code, 7, 4) = '0118' ORDER BY c.fid LIMIT 2")).all()
        elsewhere = conn.execute(text("SELECT code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
                                      "FROM layers.grids WHERE code <> ALL(:g) ORDER BY code LIMIT 1"),
                                 {"g": [r.grid for r in lamps]}).one()
    grids = sorted({r.grid for r in lamps})
    contractor = handler(engine, "新吴区路灯管理所", "contractor", grids=grids, classes=["C0118"])
    contractor_writer = key(engine, "新吴区路灯管理所", "contractor", ["city_components"], grids=grids,
                            classes=["C0118"])
    inside = http.post("/cases", json={"component_code": lamps[0].code, "description": "路灯不亮"},
                       headers=keys["hotline"])
    assert inside.status_code == 201, inside.text
    assert inside.json()["class_code"] == "C0118" and inside.json()["department"] == "新吴区路灯管理所"
    outside = report(http, {"lon": elsewhere[1], "lat": elsewhere[2]}, "E0102", headers=keys["hotline"]).json()
    assert http.get(f"/cases/{inside.json()['case_no']}", headers=contractor).status_code == 200
    refused = http.get(f"/cases/{outside['case_no']}", headers=contractor)
    assert refused.status_code == 403 and refused.json()["code"] == "outside_scope"
    listed = http.get("/cases", headers=contractor).json()["cases"]
    assert listed and all(c["grid_code"] in grids and c["class_code"] == "C0118" for c in listed)
    # the same scope on the component layer: edit inside, but never move out
    item = f"/collections/city_components/items/{lamps[0].fid}"
    assert http.patch(item, json={"properties": {"status": "破损"}}, headers=contractor_writer).status_code == 200
    moved = http.patch(item, json={"geometry": {"type": "Point", "coordinates": [elsewhere[1], elsewhere[2]]}},
                       headers=contractor_writer)
    assert moved.status_code == 403 and moved.json()["code"] == "outside_scope"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM layers.city_components WHERE fid = :f"),
                            {"f": lamps[0].fid}).scalar() == "破损"


def test_routing_follows_the_table(http, engine, keys, where):
    place = where[4]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO cases.responsibility (class_prefix, area, department, register_h, dispatch_h, "
                          "handle_h, verify_h, close_h) VALUES ('E0601', :g, '测试网格工作站', 1, 1, 2, 1, 1)"),
                     {"g": place["grid"]})
    try:
        case = report(http, fresh(place), "E0601", headers=keys["supervisor"]).json()
        assert case["department"] == "测试网格工作站"
        reported, due = (datetime.fromisoformat(case[k]) for k in ("reported_at", "stage_due"))
        assert due - reported == timedelta(hours=1)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM cases.responsibility WHERE department = '测试网格工作站'"))


def test_bad_reports_are_refused_with_reasons(http, keys, where):
    far = report(http, {"lon": 116.4, "lat": 39.9}, headers=keys["supervisor"])
    assert far.status_code == 422 and far.json()["code"] == "outside_district"
    unknown = report(http, where[0], "E9999", headers=keys["supervisor"])
    assert unknown.status_code == 422 and "E0102 暴露垃圾" in unknown.json()["description"]
    bad_component = report(http, where[0], None, headers=keys["supervisor"], component_code="3202140118999999")
    assert bad_component.status_code == 422 and bad_component.json()["code"] == "unknown_component"
    assert http.post("/cases", json={"class_code": "E0102", "lon": "east"}).status_code == 400


def test_the_same_report_twice_with_an_idempotency_key_is_one_case(http, keys, where):
    spot, headers = fresh(where[5]), keys["hotline"] | {"Idempotency-Key": "report-abc-12345"}
    first = report(http, spot, "E0201", headers=headers)
    second = report(http, spot, "E0201", headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["case_no"] == second.json()["case_no"]
    other = report(http, fresh(where[5]), "E0201", headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"


def test_a_near_report_of_the_same_class_is_linked_not_merged(http, keys, where):
    spot = fresh(where[1])
    first = report(http, spot, "E0104", headers=keys["hotline"]).json()
    near = report(http, spot | {"lon": spot["lon"] + 0.0002}, "E0104", headers=keys["hotline"]).json()  # ~19 m
    other_class = report(http, spot, "E0105", headers=keys["hotline"]).json()
    assert near["duplicate_of"] == first["case_no"] and near["case_no"] != first["case_no"]
    assert other_class["duplicate_of"] is None
    detail = http.get(f"/cases/{first['case_no']}", headers=keys["dispatcher"]).json()
    assert near["case_no"] in detail["possible_duplicates"]


def test_the_contact_stays_private(http, engine, keys, where):
    case = report(http, fresh(where[2]), "E0103", headers=keys["supervisor"],
                  contact={"name": "张三", "phone": "13900000000"}).json()
    public = http.get("/collections/cases/items", params={"filter": f"case_no = '{case['case_no']}'"}).text
    assert "13900000000" not in public and "张三" not in public
    assert "13900000000" not in http.get(f"/open311/v2/requests/{case['case_no']}.json").text
    assert http.get(f"/cases/{case['case_no']}", headers=keys["supervisor"]).json()["contact"]["name"] == "张三"
    own = handler(engine, case["department"])
    assert "contact" not in http.get(f"/cases/{case['case_no']}", headers=own).json()
    assert http.get(f"/cases/{case['case_no']}").status_code == 401


def test_anonymous_reports_are_limited_per_address(http, where):
    address = {"X-Forwarded-For": "203.0.113.77"}
    codes = [report(http, fresh(where[3]), "E0106", headers=address).status_code for _ in range(21)]
    assert codes[:20] == [201] * 20 and codes[20] == 429
    assert report(http, fresh(where[3]), "E0106", headers={"X-Forwarded-For": "203.0.113.78"}).status_code == 201
    sneaky = report(http, fresh(where[3]), "E0106", headers={"X-Forwarded-For": "203.0.113.79"}, source="监督员")
    assert sneaky.status_code == 403


def test_photos_in_a_report_and_overdue_queue(http, engine, keys, where):
    import base64

    created = report(http, fresh(where[0]), "E0107", headers=keys["supervisor"],
                     photos=[base64.b64encode(jpeg_with_gps()).decode()])
    assert created.status_code == 201, created.text
    no = created.json()["case_no"]
    with engine.begin() as conn:  # the stage's deadline has passed
        conn.execute(text("UPDATE layers.cases SET stage_due = now() - interval '1 hour' WHERE case_no = :n"),
                     {"n": no})
    overdue = http.get("/cases", params={"overdue": "true", "state": "上报", "limit": 500},
                       headers=keys["dispatcher"]).json()["cases"]
    assert no in [c["case_no"] for c in overdue] and all(c["overdue"] for c in overdue)
    photos = http.get(f"/cases/{no}", headers=keys["dispatcher"]).json()["photos"]
    assert len(photos) == 1 and photos[0]["state"] == "上报"


def test_statistics_per_grid_street_and_department(http, keys, where):
    now = datetime.now(timezone.utc)
    params = {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    by_grid = http.get("/cases/statistics", params=params | {"by": "grid"}, headers=keys["dispatcher"])
    assert by_grid.status_code == 200, by_grid.text
    groups = {g["grid"]: g for g in by_grid.json()["groups"]}
    first = groups[where[0]["grid"]]
    assert first["cases"] >= 2 and first["by_class"]["E0102"] >= 1 and first["by_state"].get("结案", 0) >= 1
    assert first["rework_rate"] == 0.5 and first["on_time_rate"] == 1.0
    assert {"上报", "派遣", "处置", "反馈"} <= set(first["mean_hours_by_stage"])
    for by in ("street", "department"):
        response = http.get("/cases/statistics", params=params | {"by": by}, headers=keys["supervisor"])
        assert response.status_code == 200 and response.json()["groups"]
    assert http.get("/cases/statistics", params=params | {"by": "planet"}, headers=keys["dispatcher"]).status_code == 400


def test_keys_create_takes_a_role_and_a_scope(http, engine, where):
    from tests.test_cli import twin

    created = twin("keys", "create", "--department", "新吴区路灯管理所", "--role", "contractor",
                   "--grids", f"{where[0]['grid']},{where[1]['grid']}", "--classes", "C0118")
    assert created.returncode == 0, created.stderr
    prefix = created.stdout.strip().split("_")[1]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT role, scope_grids, scope_classes FROM twin.api_key WHERE prefix = :p"),
                           {"p": prefix}).one()
    assert row == ("contractor", [where[0]["grid"], where[1]["grid"]], ["C0118"])
    listed = http.get("/cases", headers={"Authorization": f"Bearer {created.stdout.strip()}"})
    assert listed.status_code == 200
    assert twin("keys", "create", "--department", "x", "--role", "mayor").returncode != 0
