"""An ETL run SIGKILLed again and again, at a different point each time (each stage, plus a seeded random
delay into it): the layer is always as before the run or as after it, never between; killed runs end up
'failed'/'interrupted' with no change, history or quarantine rows of their own; the rerun completes.
The real `twin etl run` command on a private database."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from etl.records import LOCK_SPACE
from etl.run import run_file
from tests.etl_support import REPO, component_codes, district_points, drop_database, engine_for, private_database
from tests.test_etl_runs import components_csv

DB = "twin_etl_kill_points"
TWIN = [str(Path(sys.executable).with_name("twin"))]
KNOWN, NEW, BAD = 2_000, 148_000, 50
# where to kill: a stage seen in the run record, then a random delay up to the given seconds
KILL_POINTS = [("reading", 0.3), ("checking keys", 0.3), ("loading", 0.05), ("loading", 0.6),
               ("loading", 0.8)]


@pytest.fixture(scope="module")
def site(database_url, tmp_path_factory):
    """(engine, environment for the CLI, the file of the run under test) on a private database holding
    KNOWN components; the file updates those, adds NEW and has BAD rows to quarantine."""
    url = private_database(database_url, DB)
    engine = engine_for(url)
    files = tmp_path_factory.mktemp("kill-points")
    codes = component_codes(500_000, KNOWN + NEW + BAD)
    lon, lat = np.round(district_points(KNOWN + NEW + BAD, seed=11), 7)
    assert run_file(engine, "city_components", components_csv(files / "known.csv", codes[:KNOWN], lon[:KNOWN],
                                                              lat[:KNOWN])).status == "succeeded"
    lon[-BAD:], lat[-BAD:] = lat[-BAD:].copy(), lon[-BAD:].copy()  # swapped axes: rejected
    status = np.where(np.arange(KNOWN + NEW + BAD) < KNOWN, "破损", "完好")
    big = components_csv(files / "big.csv", codes, lon, lat, status)
    env = os.environ | {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(files)}
    yield engine, env, big
    engine.dispose()
    drop_database(database_url, DB)


def state(engine) -> dict:
    """What a run may change, fingerprinted: the layer (fids, versions, values), its history, the change log."""
    with engine.connect() as conn:
        return {name: tuple(conn.execute(text(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {name} t")).one())
            for name in ("layers.city_components", "history.city_components", "twin.change")}


def own_rows(engine, run_id: int) -> tuple[int, int]:
    """(change rows, quarantine rows) of a run."""
    with engine.connect() as conn:
        return tuple(conn.execute(text("SELECT (SELECT count(*) FROM twin.change WHERE run_id = :id), "
                                       "(SELECT count(*) FROM twin.quarantine WHERE run_id = :id)"),
                                  {"id": run_id}).one())


def kill_at(engine, env, big, stage: str, delay: float, since: int) -> tuple[int | None, bool]:
    """Start the run, SIGKILL it `delay` s after its record shows `stage`; (run id, whether it had finished)."""
    process = subprocess.Popen([*TWIN, "etl", "run", "city_components", str(big)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    run_id = None
    with engine.connect() as conn:
        while process.poll() is None and time.monotonic() < deadline:
            conn.rollback()
            row = conn.execute(text("SELECT id, stage FROM twin.etl_run WHERE id > :since AND file_name = 'big.csv' "
                                    "ORDER BY id DESC LIMIT 1"), {"since": since}).first()
            if row:
                run_id = row.id
                if row.stage == stage:
                    break
            time.sleep(0.01)
    time.sleep(delay)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    if run_id is not None:  # the server notices the dead client, rolls back and drops the run's lock
        with engine.connect() as conn:
            while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:s, :id)"),
                                   {"s": LOCK_SPACE, "id": run_id}).scalar():
                conn.rollback()
                assert time.monotonic() < deadline + 30, "the killed run's session never ended"
                time.sleep(0.05)
    return run_id, finished


def test_a_run_killed_anywhere_is_all_or_nothing_and_the_rerun_completes(site):
    engine, env, big = site
    rng = np.random.default_rng(20261127)
    before = state(engine)
    killed, completed, last = [], None, 0
    for stage, spread in KILL_POINTS:
        delay = float(rng.uniform(0, spread))
        run_id, finished = kill_at(engine, env, big, stage, delay, last)
        assert run_id is not None, f"the run never recorded itself before the kill at {stage}"
        last = run_id
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM twin.etl_run WHERE id = :id"), {"id": run_id}).scalar()
        if status == "succeeded":  # the kill came after the commit: the whole run is in
            completed = run_id
            break
        assert state(engine) == before, f"killed at {stage} + {delay:.2f} s: the layer changed"
        assert own_rows(engine, run_id) == (0, 0)
        killed.append((run_id, stage, round(delay, 2), finished))
    print(f"\nkilled runs (id, stage, delay s, had finished): {killed}; completed before a kill: {completed}")
    assert len(killed) >= 3

    if completed is None:
        rerun = subprocess.run([*TWIN, "etl", "run", "city_components", str(big)], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr
        with engine.connect() as conn:
            completed = conn.execute(text("SELECT max(id) FROM twin.etl_run WHERE status = 'succeeded'")).scalar()
    with engine.connect() as conn:
        run = conn.execute(text("SELECT * FROM twin.etl_run WHERE id = :id"), {"id": completed}).mappings().one()
        stale = conn.execute(text("SELECT id, status, error, finished_at IS NOT NULL FROM twin.etl_run "
                                  "WHERE id = ANY(:ids) ORDER BY id"), {"ids": [k[0] for k in killed]}).all()
        versions = dict(conn.execute(text("SELECT version, count(*) FROM layers.city_components GROUP BY 1")).all())
    assert (run["inserted"], run["updated"], run["unchanged"], run["quarantined"]) == (NEW, KNOWN, 0, BAD)
    assert own_rows(engine, completed) == (NEW + KNOWN, BAD)
    assert versions == {1: NEW, 2: KNOWN}
    after = state(engine)
    assert after["layers.city_components"][0] == KNOWN + NEW
    assert after["history.city_components"][0] == before["history.city_components"][0] + KNOWN
    assert after["twin.change"][0] == before["twin.change"][0] + KNOWN + NEW
    # every killed run was found by the next run's sweep: failed, interrupted, finished
    assert [tuple(row) for row in stale] == [(k[0], "failed", "interrupted", True) for k in killed]
