"""Every file format and coordinate system a department sends, loaded end to end through the ETL
into a private database; stored points are compared with the known originals (pyproj.Geod)."""

import itertools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from sqlalchemy import text

from etl.offset import wgs84_to_bd09, wgs84_to_gcj02
from etl.run import run_file
from tests.etl_support import (GEOD, component_codes, database_fixture, district_points, max_offset_m,
                               run_row, stored_points)

N = 6
DB = "twin_etl_formats"
_batches = itertools.count(1)


db = database_fixture(DB)


@dataclass
class Batch:
    codes: list[str]
    lon: np.ndarray
    lat: np.ndarray

    def projected(self, epsg: int) -> tuple[np.ndarray, np.ndarray]:
        return pyproj.Transformer.from_crs(4490, epsg, always_xy=True).transform(self.lon, self.lat)

    def frame(self, x=None, y=None, names=("部件标识码", "部件状态", "经度", "纬度")) -> pd.DataFrame:
        x, y = (self.lon, self.lat) if x is None else (x, y)
        return pd.DataFrame({names[0]: self.codes, names[1]: "完好", names[2]: x, names[3]: y})

    def geoframe(self, epsg: int = 4490, columns=("code", "status")) -> gpd.GeoDataFrame:
        x, y = (self.lon, self.lat) if epsg in (4326, 4490) else self.projected(epsg)
        return gpd.GeoDataFrame({columns[0]: self.codes, columns[1]: "完好"}, geometry=shapely.points(x, y),
                                crs=epsg)


@pytest.fixture
def batch() -> Batch:
    n = next(_batches)
    return Batch(component_codes(n * 100, N), *district_points(N, seed=n))


def load(db, path: Path, **options):
    result = run_file(db, "city_components", path, **options)
    assert result.status == "succeeded", result.error
    return result


def assert_loaded(db, batch: Batch, result, tolerance_m: float = 0.01) -> None:
    assert result.counts["inserted"] == N and result.counts["quarantined"] == 0
    assert max_offset_m(db, batch.codes, batch.lon, batch.lat) < tolerance_m


def test_geojson(db, batch, tmp_path):
    path = tmp_path / "components.geojson"
    batch.geoframe(4326).to_file(path)
    assert_loaded(db, batch, load(db, path))


@pytest.mark.parametrize("zipped", [False, True])
def test_shapefile_in_cgcs2000_gauss_kruger(db, batch, tmp_path, zipped):
    folder = tmp_path / "shp"
    folder.mkdir()
    batch.geoframe(4549).to_file(folder / "部件.shp", engine="pyogrio")
    path = folder / "部件.shp"
    if zipped:
        path = tmp_path / "components.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for part in folder.iterdir():
                archive.write(part, f"export/{part.name}")
    assert_loaded(db, batch, load(db, path))


@pytest.mark.parametrize("cpg, zipped", [(False, False), (True, False), (False, True)])
def test_gbk_shapefile_with_chinese_field_names(db, batch, tmp_path, cpg, zipped):
    frame = batch.geoframe(4549, columns=("部件标识码", "部件状态"))
    frame["权属单位"] = "新吴区城管局"
    frame.to_file(tmp_path / "部件.shp", engine="pyogrio", encoding="GBK")
    if not cpg:
        (tmp_path / "部件.cpg").unlink()
    raw = (tmp_path / "部件.dbf").read_bytes()
    assert "权属单位".encode("gbk") in raw and "权属单位".encode("utf-8") not in raw
    path = tmp_path / "部件.shp"
    if zipped:
        path = tmp_path / "gbk.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for part in tmp_path.glob("部件.*"):
                archive.write(part, part.name)
    result = load(db, path)
    assert_loaded(db, batch, result)
    assert result.ignored == []
    with db.connect() as conn:
        owners = conn.execute(text("SELECT DISTINCT owner_unit FROM layers.city_components WHERE code = ANY(:c)"),
                              {"c": batch.codes}).scalars().all()
    assert owners == ["新吴区城管局"]


def test_geopackage_with_two_layers_needs_a_choice(db, batch, tmp_path):
    path = tmp_path / "two.gpkg"
    frame = batch.geoframe(4490)
    frame.iloc[:3].to_file(path, layer="井盖", engine="pyogrio")
    frame.iloc[3:].to_file(path, layer="路灯", engine="pyogrio")
    failed = run_file(db, "city_components", path)
    assert failed.status == "failed"
    assert "several layers (井盖, 路灯)" in failed.error and "source_layer" in failed.error
    assert stored_points(db, batch.codes) == {}
    result = load(db, path, source_layer="路灯")
    assert result.counts["inserted"] == N - 3
    assert set(stored_points(db, batch.codes)) == set(batch.codes[3:])
    missing = run_file(db, "city_components", path, source_layer="消防栓")
    assert missing.status == "failed" and "no layer '消防栓'" in missing.error and "井盖, 路灯" in missing.error


HEADERS = [("经度", "纬度"), ("东经", "北纬"), ("lon", "lat"), ("x", "y")]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gbk"])
@pytest.mark.parametrize("headers", HEADERS, ids=["经度纬度", "东经北纬", "lon-lat", "x-y"])
def test_csv_with_coordinate_columns(db, batch, tmp_path, headers, encoding):
    path = tmp_path / "components.csv"
    batch.frame(names=("部件标识码", "部件状态", *headers)).to_csv(path, index=False, encoding=encoding)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    assert_loaded(db, batch, load(db, path))


@pytest.mark.parametrize("headers", [("经度", "纬度"), ("lon", "lat")])
def test_xlsx_with_coordinate_columns(db, batch, tmp_path, headers):
    path = tmp_path / "部件.xlsx"
    batch.frame(names=("部件标识码", "部件状态", *headers)).to_excel(path, index=False)
    assert_loaded(db, batch, load(db, path))


@pytest.mark.parametrize("system, forward", [("GCJ02", wgs84_to_gcj02), ("BD09", wgs84_to_bd09)])
def test_offset_coordinates_in_a_chinese_csv_with_bom(db, batch, tmp_path, system, forward):
    path = tmp_path / f"{system}.csv"
    shifted = forward(batch.lon, batch.lat)
    assert GEOD.inv(*shifted, batch.lon, batch.lat)[2].min() > 100  # the file's coordinates are far off as they are
    batch.frame(*shifted).to_csv(path, index=False, encoding="utf-8-sig")
    assert path.read_bytes().startswith("\ufeff部件标识码".encode("utf-8"))
    result = load(db, path, crs=system)
    assert_loaded(db, batch, result)
    assert run_row(db, result.run_id)["crs"] == system


@pytest.mark.parametrize("epsg, suffix", [(4490, ".gpkg"), (4326, ".fgb"), (4549, ".fgb"), (3857, ".gpkg"),
                                          (4549, ".parquet"), (4528, ".parquet")])
def test_declared_crs(db, batch, tmp_path, epsg, suffix):
    path = tmp_path / f"components{suffix}"
    frame = batch.geoframe(epsg)
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_file(path, engine="pyogrio")
    if epsg == 4528:
        assert frame.geometry.x.min() > 40_000_000  # the zone prefix is in the file
    assert_loaded(db, batch, load(db, path))


@pytest.mark.parametrize("epsg", [4549, 4528, 3857, 4326, 4490])
def test_given_crs_for_plain_x_y_columns(db, batch, tmp_path, epsg):
    """EPSG:4549 and 4528 define northing first; files still put eastings in x, and x is read as easting."""
    x, y = batch.projected(epsg)
    path = tmp_path / "survey.csv"
    batch.frame(x, y, names=("code", "status", "x", "y")).to_csv(path, index=False)
    assert pyproj.CRS.from_epsg(4549).axis_info[0].direction == "north"
    assert_loaded(db, batch, load(db, path, crs=f"EPSG:{epsg}"))


@pytest.mark.parametrize("name, content, expected", [
    ("components.gpkg", b"code,status\n1,2\n", "named as a GeoPackage but its content is plain text"),
    ("components.zip", b"SQLite format 3\x00" + b"\x00" * 100, "named as a zipped dataset but its content is an SQLite"),
    ("components.geojson", b"\x89PNG\r\n\x1a\n", "named as GeoJSON but its content is a PNG image"),
    ("components.csv", b"", "is empty"),
    ("components.doc", b"hello", "unsupported file type .doc"),
])
def test_content_that_is_not_what_the_name_says(db, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    result = run_file(db, "city_components", path)
    assert result.status == "failed" and expected in result.error
    assert run_row(db, result.run_id)["error"] == result.error


def test_zip_with_several_datasets_asks_which(db, batch, tmp_path):
    frame = batch.geoframe(4490)
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, rows in (("a", frame.iloc[:2]), ("b", frame.iloc[2:])):
            rows.to_file(tmp_path / f"{name}.geojson")
            archive.write(tmp_path / f"{name}.geojson", f"{name}.geojson")
    failed = run_file(db, "city_components", path)
    assert failed.status == "failed" and "several datasets (a.geojson, b.geojson)" in failed.error
    result = load(db, path, source_layer="b")
    assert result.counts["inserted"] == N - 2


def test_tab_separated_text_with_wkt_geometries(db, tmp_path):
    square = shapely.box(120.40, 31.50, 120.41, 31.51)
    path = tmp_path / "网格.txt"
    pd.DataFrame({"网格编码": ["W1", "W2"], "网格名称": ["一", "二"],
                  "wkt": [square.wkt, "POLYGON ((120.4 31.5, 120.41"]}).to_csv(path, sep="\t", index=False)
    result = run_file(db, "boundaries", path, layer="grids")
    assert (result.counts["inserted"], result.counts["quarantined"]) == (1, 1)
    with db.connect() as conn:
        stored = conn.execute(text("SELECT ST_AsText(geom) FROM layers.grids WHERE code = 'W1'")).scalar_one()
        reason = conn.execute(text("SELECT reason FROM twin.quarantine WHERE run_id = :id"),
                              {"id": result.run_id}).scalar_one()
    assert shapely.from_wkt(stored).equals(shapely.MultiPolygon([square]))
    assert reason.startswith("geometry column wkt: cannot read 'POLYGON ((120.4 31.5, 120.41' as WKT")
