"""The analyst notebooks, run top to bottom against the real server with nbclient.

Every cell must run without error (the notebooks end their sections with asserts of their own), and
the key results, read back from the kernel, must match what PostGIS says when asked directly.
Before they run, a city-management key edits a few components, so the change feed has a department's
activity besides the load; the edits are undone afterwards.
"""

import json
import time
from pathlib import Path

import httpx
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from sqlalchemy import text

from layers.water_class import classify_frame
from twin.auth import create_key

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CST = "Asia/Shanghai"
URBAN = "城市管理局"


def run(name: str, server: str, monkeypatch, report: str) -> dict:
    """Execute a notebook in a fresh python3 kernel; `report` is a last cell (not saved) printing JSON."""
    monkeypatch.setenv("TWIN_URL", server)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{name} is committed with outputs"
    notebook.cells.append(nbformat.v4.new_code_cell(f"import json\nprint(json.dumps({report}, default=str))"))
    started = time.monotonic()
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(REPO)}}).execute()
    print(f"{name}: {time.monotonic() - started:.1f} s")
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
    return json.loads(notebook.cells[-1].outputs[-1].text)


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01_pollution_near_rivers.ipynb", "02_water_quality_trends.ipynb", "03_component_inventory.ipynb",
        "04_case_review.ipynb"]  # 04: tests/test_cases_notebook.py


def test_pollution_near_rivers(server, engine, monkeypatch):
    result = run("01_pollution_near_rivers.ipynb", server, monkeypatch,
                 '{"codes": sorted(codes_query), "pairs": len(pairs_query), "agree": pairs_query == pairs_geopandas,'
                 ' "by_class": by_class.to_dict()}')
    with engine.connect() as conn:
        pairs = conn.execute(text(
            "SELECT r.code, s.credit_code, s.permit_class FROM layers.rivers r JOIN layers.pollution_sources s "
            "ON ST_DWithin(r.geom::geography, s.geom::geography, 500)")).all()
    assert result["agree"] and result["pairs"] == len(pairs) > 0
    assert result["codes"] == sorted({code for _, code, _ in pairs})
    permits = pd.Series({code: permit for _, code, permit in pairs}).value_counts()
    assert result["by_class"] == permits.to_dict()


def test_water_quality_trends(server, engine, monkeypatch):
    result = run("02_water_quality_trends.ipynb", server, monkeypatch,
                 '{"station": STATION, "target": target, "days_above": sorted(set(exceedances.day)),'
                 ' "worst_class": int(worst.water_class), "suspects": sorted(suspects.credit_code)}')
    with engine.connect() as conn:
        evaluation, target = conn.execute(text("SELECT evaluation_type, target_class FROM layers.monitoring_stations "
                                               "WHERE code = :code"), {"code": result["station"]}).one()
        readings = pd.read_sql(text("SELECT observed_at, \"do\", codmn, nh3n, tp FROM layers.water_quality "
                                    "WHERE station_code = :code AND status = '正常'"), conn,
                               params={"code": result["station"]})
    means = readings.groupby(readings.observed_at.dt.tz_convert(CST).dt.date)[["do", "codmn", "nh3n", "tp"]].mean()
    classes = classify_frame(means, evaluation).water_class
    assert result["target"] == target
    assert result["days_above"] == [str(day) for day in classes.index[classes > target]]
    assert result["worst_class"] == classes.max()
    assert result["suspects"], "a station on 伯渎港 has sources upstream in the sample"


@pytest.fixture
def department_edits(server, engine):
    """A city-management key marks three intact components damaged; undone (by the same key) afterwards."""
    with engine.begin() as conn:
        key = create_key(conn, URBAN, ["city_components"])
        chosen = conn.execute(text("SELECT fid FROM layers.city_components WHERE status = '完好' "
                                   "ORDER BY fid LIMIT 3")).scalars().all()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server, headers=headers, timeout=30) as client:
        for fid in chosen:
            assert client.patch(f"/collections/city_components/items/{fid}", json={"properties": {
                "status": "破损"}}).status_code == 200
        yield chosen
        for fid in chosen:
            assert client.patch(f"/collections/city_components/items/{fid}", json={"properties": {
                "status": "完好"}}).status_code == 200


def test_component_inventory(server, engine, monkeypatch, department_edits):
    result = run("03_component_inventory.ipynb", server, monkeypatch,
                 '{"streets": streets_table[statuses].to_dict("index"), "feed": len(feed),'
                 ' "departments": sorted(set(feed.department)), "moves": len(moves),'
                 ' "then": then.status.value_counts().to_dict()}')
    with engine.connect() as conn:
        per_street = conn.execute(text(
            "SELECT s.code, c.status, count(*) FROM layers.streets s JOIN layers.city_components c "
            "ON ST_Intersects(s.geom, c.geom) GROUP BY 1, 2")).all()
        changes = conn.execute(text("SELECT count(*) FROM twin.change WHERE layer = 'city_components'")).scalar()
        loaded = dict(conn.execute(text(
            "SELECT v.status, count(*) FROM twin.change c JOIN (SELECT fid, version, status FROM layers.city_components "
            "UNION ALL SELECT fid, version, status FROM history.city_components) v USING (fid, version) "
            "WHERE c.layer = 'city_components' AND c.operation <> 'delete' AND changed_at = "
            "(SELECT min(changed_at) FROM twin.change WHERE layer = 'city_components') GROUP BY 1")).all())
    notebook = {(code, status): n for code, counts in result["streets"].items() for status, n in counts.items() if n}
    assert notebook == {(code, status): n for code, status, n in per_street}
    assert result["feed"] == changes and result["moves"] >= len(department_edits)
    assert URBAN in result["departments"]
    assert result["then"] == loaded


def test_client_errors_and_empty_answers(server):
    from twin.client import Twin, TwinError

    with Twin(server) as twin:
        with pytest.raises(TwinError) as refused:
            twin.within("no_such_layer", 100, geometry={"type": "Point", "coordinates": [120.45, 31.49]})
        assert (refused.value.status, refused.value.code, refused.value.where) == (422, "unknown_layer", "body.layer")
        nothing = twin.within("pollution_sources", 1, geometry={"type": "Point", "coordinates": [120.45, 31.49]})
        assert len(nothing) == 0 and str(nothing.crs) == "OGC:CRS84"
        before_load = twin.features("streets", as_of="2000-01-01T00:00:00+08:00")
        assert len(before_load) == 0 and len(twin.features("streets")) > 0
        assert twin.changes(after=2**62).empty
