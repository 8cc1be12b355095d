"""notebooks/04_case_review.ipynb against the live server: its answers (overdue cases per grid, component classes
by problem cases and rework) match what PostGIS says."""

import httpx
from sqlalchemy import text

from tests.case_support import fresh, key, places, report, step
from tests.test_notebooks import run


def test_case_review(server, engine, monkeypatch):
    dispatcher, supervisor = key(engine, "数字城管指挥中心", "dispatcher"), key(engine, "数字城管指挥中心", "supervisor")
    place = places(engine, 1)[0]
    with engine.connect() as conn:
        lamp = conn.execute(text("SELECT code FROM layers.city_components WHERE substr(code, 7, 4) = '0118' "
                                 "ORDER BY fid LIMIT 1")).scalar()
    with httpx.Client(base_url=server, timeout=30) as http:
        late = [report(http, fresh(place), "E0101", headers=supervisor).json()["case_no"] for _ in range(3)]
        lamp_case = http.post("/cases", json={"component_code": lamp}, headers=supervisor).json()
        no = lamp_case["case_no"]
        department = key(engine, lamp_case["department"], "department")
        for action, by, note in [("register", dispatcher, None), ("dispatch", dispatcher, None),
                                 ("accept", department, None), ("feedback", department, "换灯"),
                                 ("rework", supervisor, "仍不亮")]:
            assert step(http, no, action, by, note=note).status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE layers.cases SET stage_due = now() - interval '1 day' WHERE case_no = ANY(:n)"),
                     {"n": late})
    result = run("04_case_review.ipynb", server, monkeypatch,
                 '{"overdue": overdue_by_grid.overdue.to_dict(), '
                 '"failures": failures.set_index("class_code")[["cases", "reworked"]].to_dict("index")}')
    with engine.connect() as conn:
        overdue = dict(conn.execute(text(
            "SELECT grid_code, count(*) FROM layers.cases WHERE state NOT IN ('结案', '不予立案') "
            "AND stage_due < now() AND grid_code IS NOT NULL GROUP BY grid_code")).all())
        failures = {r.class_code: {"cases": r.cases, "reworked": r.reworked} for r in conn.execute(text(
            "SELECT class_code, count(*) AS cases, count(*) FILTER (WHERE rework > 0) AS reworked "
            "FROM layers.cases WHERE kind = '部件' GROUP BY class_code"))}
    assert result["overdue"] == overdue and overdue[place["grid"]] >= 3
    assert result["failures"] == failures and failures["C0118"]["reworked"] >= 1
