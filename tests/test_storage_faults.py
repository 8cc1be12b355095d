"""Uploads when the data directory is full or read-only: a 507 or 503 JSON answer with Retry-After, the run
recorded failed with the reason, no file half-written, the layer untouched; once there is room again the same
upload loads. The uploads directory is a tiny tmpfs mounted for the test (skipped where mounting is not allowed)."""

import shutil
import subprocess
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from tests.conftest import reachable_tmpdir
from tests.etl_support import component_codes, district_points, drop_database, engine_for, private_database, serve
from twin.auth import create_key

DB = "twin_storage_faults"
ROWS = 3000  # ~300 KB of CSV: more than the 64 KB volume holds


def mount(target, *options: str) -> bool:
    target.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(target)],
                          capture_output=True).returncode == 0


def unmount(target) -> None:
    subprocess.run(["umount", str(target)], check=True)


@pytest.fixture(scope="module")
def site(database_url):
    """(base URL, engine, uploads directory, key) of a server on a private database."""
    data_dir = reachable_tmpdir("twin-storage-")
    uploads = data_dir / "uploads"
    if not mount(uploads):
        shutil.rmtree(data_dir, ignore_errors=True)
        pytest.skip("mounting a tmpfs is not allowed here (needs root)")
    unmount(uploads)
    url = private_database(database_url, DB)
    engine = engine_for(url)
    with engine.begin() as conn:
        key = create_key(conn, "城市管理局", ["city_components"])
    with serve(url, data_dir) as base:
        yield base, engine, uploads, key
    engine.dispose()
    drop_database(database_url, DB)
    shutil.rmtree(data_dir, ignore_errors=True)


def components() -> bytes:
    lon, lat = district_points(ROWS, seed=3)
    return pd.DataFrame({"部件标识码": component_codes(900_000, ROWS), "部件状态": "完好", "经度": np.round(lon, 7),
                         "纬度": np.round(lat, 7)}).to_csv(index=False).encode("utf-8-sig")


def layer_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM layers.city_components")).scalar()


@pytest.mark.parametrize("options, status, code", [((), 507, "insufficient_storage"),
                                                    (("ro",), 503, "storage_unavailable")])
def test_an_upload_that_cannot_be_stored_is_refused_whole(site, options, status, code):
    base, engine, uploads, key = site
    body = components()
    assert len(body) > 64 << 10
    assert mount(uploads, *options)
    try:
        r = httpx.post(f"{base}/etl/city_components", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("parts.csv", body)}, timeout=30)
        left = sorted(p.name for p in uploads.iterdir())
    finally:
        unmount(uploads)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.headers["retry-after"] == "60" and "nothing was loaded" in r.json()["description"]
    assert left == []  # no half-written file
    run_id = int(r.headers["location"].rsplit("/", 1)[1])
    with engine.connect() as conn:
        run = conn.execute(text("SELECT status, error, finished_at FROM twin.etl_run WHERE id = :id"),
                           {"id": run_id}).one()
    assert run.status == "failed" and run.error.startswith("the upload could not be stored") and run.finished_at
    assert layer_rows(engine) == 0


def test_with_room_again_the_same_upload_loads(site):
    base, engine, uploads, key = site
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        r = client.post("/etl/city_components", files={"file": ("parts.csv", components())})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (run := client.get(r.headers["location"]).json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert run["status"] == "succeeded", run
    assert layer_rows(engine) == ROWS
