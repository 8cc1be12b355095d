"""Upgrading a serving database: the previous release's schema (revision 0013) with data and history, migrated
to whatever head is while a writer goes on writing through the change-tracking triggers. Every write the writer
saw committed is in the change log, once, in commit order; change ids and times agree; nothing is lost."""

import threading
import time

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from etl.run import run_file
from layers.store import set_write_context
from tests.etl_support import component_codes, district_points, drop_database, empty_database, engine_for
from tests.test_etl_runs import components_csv
from twin.db import current_revision, head_revision, migrate

PREVIOUS = "0013"
DB = "twin_upgrade"
STATUSES = ("完好", "丢失", "废弃", "占用")  # never 破损, the loaded state: every write changes the row
WRITER = "upgrade-writer"


@pytest.fixture
def previous(database_url, tmp_path):
    """A database at the previous release's schema: 100 components loaded and then all updated by the ETL."""
    url = empty_database(database_url, DB)
    migrate(PREVIOUS, url=url)
    engine = engine_for(url)
    codes = component_codes(950_000, 100)
    lon, lat = district_points(100, seed=3)
    for name, status in (("a.csv", "完好"), ("b.csv", "破损")):
        result = run_file(engine, "city_components", components_csv(tmp_path / name, codes, lon, lat, status))
        assert result.status == "succeeded", result.error
    yield url, engine
    engine.dispose()
    drop_database(database_url, DB)


def test_migrating_while_a_writer_writes_loses_no_change(previous):
    url, engine = previous
    assert current_revision(url) == PREVIOUS != head_revision()
    with engine.connect() as conn:
        fids = list(conn.execute(text("SELECT fid FROM layers.city_components ORDER BY fid")).scalars())
    committed: list[tuple[int, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def write() -> None:
        with engine.connect() as conn:
            i = 0
            while not stop.is_set():
                fid, status = fids[i % len(fids)], STATUSES[i // len(fids) % len(STATUSES)]
                try:
                    with conn.begin():
                        set_write_context(conn, WRITER)
                        conn.execute(text("UPDATE layers.city_components SET status = :s WHERE fid = :f"),
                                     {"s": status, "f": fid})
                    committed.append((fid, status))
                except DBAPIError as e:
                    failures.append(str(e.orig))
                i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(committed) < 20:
            time.sleep(0.01)
        migrate(url=url)
        during = len(committed)
        while len(committed) < during + 20:  # and it goes on writing on the new schema
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join(30)
    assert current_revision(url) == head_revision()
    assert failures == []
    with engine.connect() as conn:
        log = conn.execute(text("SELECT change_id, changed_at, fid, version, actor FROM twin.change "
                                "WHERE layer = 'city_components' ORDER BY change_id")).all()
        stored = {r.fid: (r.status, r.version) for r in conn.execute(text(
            "SELECT fid, status, version FROM layers.city_components"))}
        kept = dict(conn.execute(text("SELECT fid, count(*) FROM history.city_components GROUP BY fid")).all())
    assert [r.changed_at for r in log] == sorted(r.changed_at for r in log)  # ids in the order of the writes
    assert [r.fid for r in log if r.actor == WRITER] == [fid for fid, _ in committed]  # each write once, in order
    versions: dict[int, list[int]] = {}
    for r in log:
        versions.setdefault(r.fid, []).append(r.version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())  # no version skipped or repeated
    last = dict(committed)
    assert sorted(stored) == fids  # no feature lost
    for fid, (status, version) in stored.items():
        assert status == last.get(fid, "破损") and version == len(versions[fid]) == kept[fid] + 1
    assert np.count_nonzero([r.actor == WRITER for r in log]) == len(committed) > 40
