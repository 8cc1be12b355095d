"""Vector files are read in batches (Arrow), and a load read in many small batches stores and quarantines
exactly what a load read in one piece does: the same rows, in file order, the same reasons at the same file
row numbers, a duplicate key caught when its two rows are batches apart. Also: the column-wise fast path of
the code checks agrees with the checks one by one."""

import shutil
import zipfile

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

import etl.run
from etl.readers import opened
from etl.run import run_file
from layers.codes import CHECKS, SURELY_VALID
from tests.etl_support import component_codes, database_fixture, district_points, quarantine

DB = "twin_etl_streaming"
N, BATCH = 40, 7
BAD = {3: "duplicate key", 31: "duplicate key", 13: "duplicate key", 39: "duplicate key",
       21: "is not one of", 26: "swapped", 34: "is required but empty", 35: "is required but empty",
       18: "部件标识码应为16位数字"}  # 1-based file rows -> what their reason says

db = database_fixture(DB)


def _frame() -> gpd.GeoDataFrame:
    codes = component_codes(300, N)
    lon, lat = district_points(N, 5)
    status = ["完好"] * N
    codes[30] = f" {codes[2]} "  # the key of row 3 again in row 31, four batches later (equal once trimmed)
    codes[12] = codes[38]  # a pair that meets only in the last batch
    codes[17] = codes[17][:-1] + "X"  # not 16 digits
    status[20] = "坏了"
    lon[25], lat[25] = lat[25], lon[25]  # swapped axes
    codes[33] = codes[34] = ""  # blank keys are missing, not duplicates
    return gpd.GeoDataFrame({"部件标识码": codes, "部件状态": status},
                            geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4490")


def _write(frame: gpd.GeoDataFrame, folder, suffix: str):
    path = folder / f"components{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".zip":  # a zipped Shapefile, GBK attributes as Chinese desktop GIS writes them
        shp = folder / "shp" / "components.shp"
        shp.parent.mkdir()
        frame.to_file(shp, encoding="GB18030", engine="pyogrio")
        with zipfile.ZipFile(path, "w") as z:
            for part in shp.parent.iterdir():
                z.write(part, part.name)
        shutil.rmtree(shp.parent)
    elif suffix == ".fgb":  # without its spatial index, which would reorder the features
        frame.to_file(path, engine="pyogrio", layer_options={"SPATIAL_INDEX": "NO"})
    else:
        frame.to_file(path, engine="pyogrio")
    return path


def _load(db, path, batch: int, monkeypatch) -> tuple[dict, list[tuple], dict]:
    """Load `path` into the emptied layer reading `batch` rows at a time: (counts, stored rows, quarantine)."""
    with db.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components"))
    monkeypatch.setattr(etl.run, "VALIDATE_CHUNK", batch)
    result = run_file(db, "city_components", path)
    assert result.status == "succeeded", result.error
    with db.connect() as conn:
        stored = [tuple(r) for r in conn.execute(text(
            "SELECT code, status, ST_AsText(geom), version FROM layers.city_components ORDER BY fid"))]
        logged = conn.execute(text("SELECT count(*) FROM twin.change WHERE run_id = :id"),
                              {"id": result.run_id}).scalar()
    assert logged == len(stored)
    return result.counts, stored, quarantine(db, result.run_id)


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".geojson", ".parquet", ".zip"])
def test_many_batches_load_exactly_as_one_piece(db, tmp_path, monkeypatch, suffix):
    frame = _frame()
    path = _write(frame, tmp_path, suffix)
    with opened(path) as source:
        pieces = list(source.pieces(BATCH))
    assert [(p.offset, len(p.attributes)) for p in pieces] == [(s, min(BATCH, N - s)) for s in range(0, N, BATCH)]
    assert [list(p.attributes.index) for p in pieces] == [list(range(s, min(s + BATCH, N))) for s in range(0, N, BATCH)]

    counts, stored, held = _load(db, path, BATCH, monkeypatch)
    assert (counts, stored, held) == _load(db, path, 10_000, monkeypatch)

    assert {row: reason for row, (reason, _) in held.items()}.keys() == BAD.keys()
    assert all(BAD[row] in reason for row, (reason, _) in held.items()), held
    assert held[31][0].startswith(f"duplicate key code={frame['部件标识码'][2]}")
    sent = frame["部件标识码"][30]
    assert held[31][1]["部件标识码"] == (sent.strip() if suffix == ".zip" else sent)  # as sent (dBase pads text)
    assert held[13][0] == held[39][0]
    assert counts == {"read": N, "inserted": N - len(BAD), "updated": 0, "unchanged": 0, "deleted": 0,
                      "repaired": 0, "quarantined": len(BAD)}
    kept = [i for i in range(N) if i + 1 not in BAD]
    expected = [(frame["部件标识码"][i], "完好", frame.geometry[i].wkt, 1) for i in kept]
    assert [(c, s, shapely.from_wkt(g), v) for c, s, g, v in stored] == \
        [(c, s, shapely.from_wkt(g), v) for c, s, g, v in expected]


def test_an_empty_file_loads_nothing(db, tmp_path, monkeypatch):
    path = _write(_frame().iloc[:0], tmp_path, ".gpkg")
    counts, stored, held = _load(db, path, BATCH, monkeypatch)
    assert counts["read"] == 0 and counts["inserted"] == 0 and stored == [] and held == {}


def test_surely_valid_codes_are_valid():
    values = pd.Series(component_codes(1, 30) + ["3202140101000001", "3202000101000001", "9202140101000001",
                                                 "3202149999000001", "320214010100000", "32021401010000011",
                                                 "３２０２１４０１０１０００００１", "", "XW-001", "a" * 33, "站点"],
                       dtype="string")
    for name, surely in SURELY_VALID.items():
        fast = surely(values)
        assert fast.any() or name == "station_code"
        assert all(CHECKS[name](v) is None for v in values[fast].tolist())
        assert [CHECKS[name](v) is None for v in values.tolist()] == list(fast), name
