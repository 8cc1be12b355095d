"""A file validated in chunks (each streamed to the database while the next is checked) loads exactly
as if it were validated in one piece: the same rows accepted, in file order, the same rows quarantined
with the same reasons, duplicates caught across chunks."""

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

import etl.run
from etl.run import run_file
from tests.etl_support import component_codes, database_fixture, district_points, quarantine

DB = "twin_etl_chunks"
CHUNK = 7

db = database_fixture(DB)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(etl.run, "VALIDATE_CHUNK", CHUNK)


def _file(path, codes, lon, lat, status):
    pd.DataFrame({"部件标识码": codes, "部件状态": status, "经度": lon, "纬度": lat}).to_csv(path, index=False)
    return path


def _stored(db) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT code, status, version FROM layers.city_components ORDER BY fid"))]


def _indexes(db) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(text(
            "SELECT pg_get_indexdef(indexrelid) || coalesce(' ' || (SELECT pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c WHERE c.conindid = indexrelid), '') FROM pg_index "
            "WHERE indrelid = CAST('layers.city_components' AS regclass)")).scalars())


def test_load_into_an_empty_layer_builds_its_indexes_after_the_copy(db, tmp_path):
    indexes = _indexes(db)
    assert len(indexes) == 4  # fid, code, geometry, updated_at (migration 0011)
    lon, lat = district_points(30, 13)
    loaded = run_file(db, "city_components", _file(tmp_path / "e.csv", component_codes(700, 30), lon, lat, "完好"))
    assert loaded.counts["inserted"] == 30 and _indexes(db) == indexes
    with db.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components"))
    with db.connect() as reader:  # a reader in the layer: no waiting for it, the copy keeps the indexes
        reader.execute(text("SELECT count(*) FROM layers.city_components")).scalar()
        again = run_file(db, "city_components", _file(tmp_path / "f.csv", component_codes(700, 30), lon, lat, "完好"))
        reader.rollback()
    assert again.counts["inserted"] == 30 and _indexes(db) == indexes
    with db.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components"))


def test_chunked_load_matches_one_piece(db, tmp_path, small_chunks):
    n = 40
    codes = component_codes(500, n)
    lon, lat = district_points(n, 11)
    status = ["完好"] * n
    codes[30] = f" {codes[2]} "  # the same key as row 3, four chunks later (trimmed, it is equal)
    codes[12] = codes[38]  # and a pair that meets only in the last chunk
    status[20] = "坏了"
    lon[25], lat[25] = lat[25], lon[25]  # swapped axes
    codes[33] = ""  # blank keys are missing, not duplicates
    codes[34] = ""
    result = run_file(db, "city_components", _file(tmp_path / "a.csv", codes, lon, lat, status))
    assert result.status == "succeeded", result.error
    bad = {3, 31, 13, 39, 21, 26, 34, 35}  # 1-based file rows
    expected = [(codes[i], "完好", 1) for i in range(n) if i + 1 not in bad]
    assert _stored(db) == expected  # fids follow the file order
    assert result.counts | {"read": n} == {"read": n, "inserted": n - len(bad), "updated": 0, "unchanged": 0,
                                           "deleted": 0, "repaired": 0, "quarantined": len(bad)}
    held = quarantine(db, result.run_id)
    assert set(held) == bad
    assert all(held[row][0].startswith(f"duplicate key code={codes[2]}") for row in (3, 31))
    assert all(held[row][0].startswith(f"duplicate key code={codes[38]}") for row in (13, 39))
    assert "'坏了' is not one of" in held[21][0] and "swapped" in held[26][0]
    assert all("is required but empty" in held[row][0] for row in (34, 35))
    with db.connect() as conn:
        logged = conn.execute(text("SELECT count(*) FROM twin.change WHERE run_id = :id"),
                              {"id": result.run_id}).scalar()
    assert logged == n - len(bad)

    # into the now non-empty layer (staged merge): every chunk is staged, then merged in one go
    status = ["破损" if i % 5 == 0 else "完好" for i in range(n)]
    status[20] = "坏了"
    more = component_codes(900, 3)
    again = run_file(db, "city_components", _file(tmp_path / "b.csv", codes + more, np.append(lon, lon[:3]),
                                                  np.append(lat, lat[:3]), status + ["完好"] * 3))
    assert again.status == "succeeded", again.error
    changed = [i for i in range(0, n, 5) if i + 1 not in bad]
    assert again.counts == {"read": n + 3, "inserted": 3, "updated": len(changed),
                            "unchanged": n - len(bad) - len(changed), "deleted": 0, "repaired": 0,
                            "quarantined": len(bad)}
    assert _stored(db) == [(code, "破损" if i in changed else "完好", 2 if i in changed else 1)
                           for i, code in ((i, codes[i]) for i in range(n) if i + 1 not in bad)] + \
        [(code, "完好", 1) for code in more]


def test_replace_with_nothing_usable_in_chunks_changes_nothing(db, tmp_path, small_chunks):
    before = _stored(db)
    lon, lat = district_points(20, 12)
    refused = run_file(db, "city_components", _file(tmp_path / "c.csv", component_codes(950, 20), lat, lon, "完好"),
                       mode="replace")
    assert refused.status == "failed" and "replace mode would delete every feature" in refused.error
    assert _stored(db) == before
