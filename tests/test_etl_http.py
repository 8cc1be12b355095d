"""ETL over HTTP: POST /etl/{job} with a department key, then GET /etl/runs/{id} and its quarantine,
against the real server on a private database (upload limit lowered to 1 MB for the 413 case)."""

import io
import shutil
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from sqlalchemy import text

from tests.conftest import reachable_tmpdir
from tests.etl_support import component_codes, district_points, drop_database, engine_for, private_database, serve, \
    zipped
from twin.auth import create_key

DB = "twin_etl_http"


@pytest.fixture(scope="module")
def site(database_url):
    """(base URL, engine, data dir, keys by name) of a server on a private database."""
    url = private_database(database_url, DB)
    engine = engine_for(url)
    with engine.begin() as conn:
        keys = {"城管": create_key(conn, "城市管理局", ["city_components", "imagery"]),
                "环保": create_key(conn, "生态环境局", ["pollution_sources"])}
    data_dir = reachable_tmpdir("twin-etl-http-")
    with serve(url, data_dir, max_upload_mb="1") as base:
        yield base, engine, data_dir, keys
    engine.dispose()
    drop_database(database_url, DB)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def http(site):
    with httpx.Client(base_url=site[0], timeout=30) as client:
        yield client


def auth(site, who="城管") -> dict:
    return {"Authorization": f"Bearer {site[3][who]}"}


def csv_bytes(codes, status="完好", seed=1) -> bytes:
    lon, lat = district_points(len(codes), seed)
    return pd.DataFrame({"部件标识码": codes, "部件状态": status, "经度": lon, "纬度": lat}).to_csv(
        index=False).encode("utf-8-sig")


def finished(http, site, location: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        run = http.get(location, headers=auth(site)).raise_for_status().json()
        if run["status"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def post(http, site, name, content, who="城管", job="city_components", **fields):
    return http.post(f"/etl/{job}", headers=auth(site, who) if who else {}, files={"file": (name, content)},
                     data={k: v for k, v in fields.items() if v is not None})


def test_keys_are_required_and_layers_are_the_departments_own(http, site):
    body = csv_bytes(component_codes(1, 2))
    missing = post(http, site, "a.csv", body, who=None)
    assert missing.status_code == 401 and missing.json()["code"] == "missing_key"
    wrong = http.post("/etl/city_components", headers={"Authorization": "Bearer twin_dead_beef"},
                      files={"file": ("a.csv", body)})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_key"
    other = post(http, site, "a.csv", body, who="环保")
    assert other.status_code == 403 and other.json()["code"] == "forbidden_layer"
    assert "生态环境局" in other.json()["description"] and "city_components" in other.json()["description"]


def test_oversized_upload_is_refused_before_it_is_stored(http, site):
    uploads = site[2] / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    response = post(http, site, "big.csv", b"x" * (1 << 20) + b"y" * (1 << 19))
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large" and "limit is 1 MB" in response.json()["description"]
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before


@pytest.mark.parametrize("job, fields, status, where", [
    ("nonsense", {}, 404, "path.job"),
    ("city_components", {"mode": "merge"}, 400, "mode"),
    ("city_components", {"layer": "roads"}, 400, "layer"),
    ("city_components", {"crs": "EPSG:99999"}, 400, "crs"),
])
def test_bad_requests_say_what_and_where(http, site, job, fields, status, where):
    response = post(http, site, "a.csv", csv_bytes(component_codes(10, 1)), job=job, **fields)
    assert response.status_code == status and response.json()["where"] == where


def test_missing_file_part(http, site):
    response = http.post("/etl/city_components", headers=auth(site), data={"layer": "city_components"})
    assert response.status_code == 400 and response.json()["where"] == "file"


@pytest.mark.parametrize("name, content, expected", [
    ("parts.gpkg", b"code,status\n1,2\n", "named as a GeoPackage but its content is plain text"),
    ("parts.zip", zipped({"../../evil.shp": b"\x00\x00\x27\x0a"}), "unsafe path '../../evil.shp'"),
    ("parts.zip", zipped({"bomb.shp": b"\x00" * (64 << 20)}), "possible zip bomb"),
])
def test_unusable_files_are_refused_and_recorded(http, site, name, content, expected):
    response = post(http, site, name, content)
    assert response.status_code == 422, response.text
    assert expected in response.json()["description"]
    run = http.get(response.headers["location"], headers=auth(site)).json()
    assert run["status"] == "failed" and expected in run["error"]


def test_upload_loads_in_the_background_with_exact_counts(http, site):
    codes = component_codes(100, 20)
    codes[3] = "32021401"  # too short
    status = ["完好"] * 20
    status[11] = "不见了"
    frame = pd.read_csv(io.BytesIO(csv_bytes(codes, status)), dtype=str, encoding="utf-8-sig")
    frame["备注"] = "普查"
    response = post(http, site, "../../etc/部件 清单.csv", frame.to_csv(index=False).encode("gbk"), mode="upsert")
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location.endswith(f"/etl/runs/{response.json()['id']}")
    run = finished(http, site, location)
    assert run["status"] == "succeeded", run
    assert run["counts"] == {"read": 20, "inserted": 18, "updated": 0, "unchanged": 0, "deleted": 0, "repaired": 0,
                             "quarantined": 2}
    assert run["ignored_columns"] == ["备注"] and run["file_name"] == "部件_清单.csv"
    assert run["department"] == "城市管理局"
    stored = site[2] / "uploads" / f"{run['id']}-部件_清单.csv"
    assert stored.read_bytes() == frame.to_csv(index=False).encode("gbk")
    with site[1].connect() as conn:
        loaded = conn.execute(text("SELECT count(*) FROM layers.city_components WHERE code = ANY(:c)"),
                              {"c": codes}).scalar_one()
    assert loaded == 18

    page = http.get(f"{location}/quarantine", params={"limit": 1}, headers=auth(site)).json()
    assert (page["numberMatched"], page["numberReturned"]) == (2, 1)
    assert page["items"][0]["row"] == 4 and "部件标识码应为16位数字" in page["items"][0]["reason"]
    assert page["items"][0]["record"]["部件标识码"] == "32021401"
    following = next(link["href"] for link in page["links"] if link["rel"] == "next")
    second = http.get(following, headers=auth(site)).json()
    assert second["items"][0]["row"] == 12 and "'不见了' is not one of" in second["items"][0]["reason"]
    assert not any(link["rel"] == "next" for link in second["links"])

    assert http.get(location, headers=auth(site, "环保")).status_code == 403
    assert http.get(f"{location}/quarantine", headers=auth(site, "环保")).status_code == 403


def test_run_lookups(http, site):
    assert http.get("/etl/runs/999999", headers=auth(site)).status_code == 404
    assert http.get("/etl/runs/abc", headers=auth(site)).status_code == 400
    assert http.get("/etl/runs/1/quarantine", params={"limit": 0}, headers=auth(site)).status_code == 400
    assert http.get("/etl/runs/1").status_code == 401


def test_raster_upload(http, site, tmp_path):
    path = tmp_path / "dem.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8", crs="EPSG:4490",
                       transform=Affine(0.004, 0, 120.35, 0, -0.004, 31.6)) as raster:
        raster.write(np.full((1, 32, 32), 7, dtype="uint8"))
    response = post(http, site, "dem.tif", path.read_bytes(), job="imagery")
    assert response.status_code == 202, response.text
    run = finished(http, site, response.headers["location"])
    assert run["status"] == "succeeded" and run["layer"] == "imagery"
    with site[1].connect() as conn:
        registered = conn.execute(text("SELECT path FROM twin.raster_source WHERE run_id = :id"),
                                  {"id": run["id"]}).scalar_one()
    with rasterio.open(registered) as cog:
        assert cog.read(1).min() == cog.read(1).max() == 7
