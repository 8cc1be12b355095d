"""ETL runs: upsert and replace, change counts, atomicity under SIGKILL and recovery of interrupted
runs, raster registration from the CLI, and the HTTP upload API (against a private database)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate
from sqlalchemy import text

from etl.records import LOCK_SPACE
from etl.run import run_file
from tests.etl_support import (REPO, change_count, component_codes, district_points, drop_database, engine_for,
                               private_database, run_row)

DB = "twin_etl_runs"
TWIN = [str(Path(sys.executable).with_name("twin"))]  # the installed `twin` command


@pytest.fixture(scope="module")
def db_url(database_url):
    url = private_database(database_url, DB)
    yield url
    drop_database(database_url, DB)


@pytest.fixture(scope="module")
def db(db_url):
    engine = engine_for(db_url)
    yield engine
    engine.dispose()


def components_csv(path, codes, lon, lat, status="完好"):
    pd.DataFrame({"部件标识码": codes, "部件状态": status, "经度": lon, "纬度": lat}).to_csv(path, index=False)
    return path


def layer_state(db, codes=None) -> tuple[int, str]:
    """Count and checksum of city_components (optionally of some codes), fids and versions included."""
    where = "" if codes is None else "WHERE code = ANY(:codes)"
    with db.connect() as conn:
        return tuple(conn.execute(text(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY fid), '')) "
            f"FROM layers.city_components t {where}"), {"codes": codes}).one())


def test_upsert_reload_modify_and_replace(db, tmp_path):
    codes = component_codes(1, 10)
    lon, lat = district_points(10, seed=1)
    first = run_file(db, "city_components", components_csv(tmp_path / "a.csv", codes, lon, lat))
    assert first.counts["inserted"] == 10 and change_count(db, first.run_id) == 10
    state = layer_state(db, codes)

    same = run_file(db, "city_components", tmp_path / "a.csv")
    assert (same.counts["unchanged"], same.counts["updated"], same.counts["inserted"]) == (10, 0, 0)
    assert change_count(db, same.run_id) == 0 and layer_state(db, codes) == state

    status = ["完好"] * 10
    status[2] = status[5] = "破损"
    moved = lon.copy()
    moved[7] += 0.001
    edit = run_file(db, "city_components", components_csv(tmp_path / "b.csv", codes, moved, lat, status))
    assert edit.counts["updated"] == 3 and edit.counts["unchanged"] == 7
    with db.connect() as conn:
        changed = conn.execute(text("SELECT c.operation, l.code, c.version FROM twin.change c "
                                    "JOIN layers.city_components l USING (fid) WHERE c.run_id = :id ORDER BY l.code"),
                               {"id": edit.run_id}).all()
    assert changed == [("update", codes[i], 2) for i in (2, 5, 7)]

    partial = run_file(db, "city_components", components_csv(tmp_path / "c.csv", codes[:6], moved[:6], lat[:6],
                                                             status[:6]))
    assert partial.counts["deleted"] == 0 and layer_state(db, codes)[0] == 10  # upsert never deletes

    replace = run_file(db, "city_components", tmp_path / "c.csv", mode="replace")
    assert replace.counts["deleted"] == 4 and replace.counts["unchanged"] == 6
    assert change_count(db, replace.run_id) == 4 and layer_state(db, codes)[0] == 6
    with db.connect() as conn:
        kept = conn.execute(text("SELECT count(*) FROM history.city_components h "
                                 "WHERE h.code = ANY(:gone)"), {"gone": codes[6:]}).scalar_one()
    assert kept >= 4  # the deleted features are in the history

    before = layer_state(db)
    bad = tmp_path / "bad.csv"
    components_csv(bad, codes[:3], lat[:3], lon[:3])  # swapped axes: every row rejected
    refused = run_file(db, "city_components", bad, mode="replace")
    assert refused.status == "failed" and "replace mode would delete every feature" in refused.error
    assert layer_state(db) == before


def test_killed_run_leaves_the_layer_as_it_was_and_is_marked_interrupted(db, db_url, tmp_path):
    n = 120_000  # big enough to be killed while its rows stream in
    big = components_csv(tmp_path / "big.csv", component_codes(300_000, n), *np.round(district_points(n, 5), 7))
    before = layer_state(db)
    env = os.environ | {"TWIN_DATABASE_URL": db_url, "TWIN_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([*TWIN, "etl", "run", "city_components", str(big)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    with db.connect() as conn:
        while True:  # wait until rows are streaming into the database, then kill
            conn.rollback()
            copying = conn.execute(text("SELECT r.id FROM twin.etl_run r JOIN pg_stat_activity a "
                                        "ON a.datname = current_database() AND a.query LIKE 'COPY%' "
                                        "WHERE r.file_name = 'big.csv' AND r.stage = 'loading'")).scalar()
            if copying or process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    assert copying and process.poll() is None, "the load finished or never started loading"
    process.send_signal(signal.SIGKILL)
    process.wait()
    with db.connect() as conn:  # the server notices the dead client, rolls back and drops the run's lock
        while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:s, :id)"), {"s": LOCK_SPACE, "id": copying}
                               ).scalar():
            conn.rollback()
            assert time.monotonic() < deadline + 30
            time.sleep(0.1)
    assert layer_state(db) == before
    assert run_row(db, copying)["status"] == "running"

    again = subprocess.run([*TWIN, "etl", "run", "city_components", str(big)], env=env, cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    stale = run_row(db, copying)
    assert (stale["status"], stale["error"]) == ("failed", "interrupted") and stale["finished_at"] is not None
    assert layer_state(db)[0] == before[0] + n


def _geotiff(path, west=120.35, north=31.60, size=64):
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32",
                       crs="EPSG:4490", transform=Affine(0.002, 0, west, 0, -0.002, north)) as raster:
        raster.write(np.arange(size * size, dtype="float32").reshape(1, size, size))


def test_raster_cli_registers_a_valid_cog(db, db_url, tmp_path):
    source = tmp_path / "dem.tif"
    _geotiff(source)
    env = os.environ | {"TWIN_DATABASE_URL": db_url, "TWIN_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([*TWIN, "etl", "raster", str(source), "--layer", "imagery"], env=env, cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with db.connect() as conn:
        path, run_id = conn.execute(text("SELECT path, run_id FROM twin.raster_source WHERE layer = 'imagery'")).one()
    assert path.startswith(str(tmp_path / "data" / "rasters"))
    valid, errors, _ = cog_validate(path)
    assert valid, errors
    with rasterio.open(path) as cog, rasterio.open(source) as original:
        assert cog.crs.to_epsg() == 4490 and cog.bounds == original.bounds
        assert np.array_equal(cog.read(1), original.read(1))
    run = run_row(db, run_id)
    assert (run["job"], run["layer"], run["status"], run["file_name"]) == ("imagery", "imagery", "succeeded", "dem.tif")

    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    failed = subprocess.run([*TWIN, "etl", "raster", str(broken)], env=env, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1 and "broken.tif cannot be loaded as a raster" in failed.stderr
    with db.connect() as conn:
        assert conn.execute(text("SELECT path FROM twin.raster_source WHERE layer = 'imagery'")).scalar() == path
