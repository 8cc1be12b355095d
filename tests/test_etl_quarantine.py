"""Nothing lost: every rejected row is quarantined with a reason a person can act on, repaired
geometries are noted per row, and source columns that map to no field are listed in the run."""

import geopandas as gpd
import pandas as pd
import pyproj
import pytest
import shapely
from sqlalchemy import text

from etl.run import run_file
from tests.etl_support import component_codes, database_fixture, quarantine, run_row

DB = "twin_etl_quarantine"
LON, LAT = 120.40, 31.52
TO_4549 = pyproj.Transformer.from_crs(4490, 4549, always_xy=True)


db = database_fixture(DB)


def test_reasons_for_a_table_of_bad_rows(db, tmp_path):
    c = component_codes(1, 10)
    e, n = TO_4549.transform(LON, LAT)
    rows = [  # 部件标识码, 部件状态, 经度, 纬度, 设置日期, expected reason (None: loaded)
        (c[0], "完好", LON, LAT, "2020-05-01", None),
        (c[1], "完好", LAT, LON, "", "x and y look swapped"),
        (c[2], "完好", e, n, "", "projected metres read as degrees (EPSG:4549"),
        (c[3], "完好", 40_000_000 + e, n, "", "--crs EPSG:4528"),
        (c[4], "完好", "", "", "", "no coordinates: 经度 and 纬度 are empty"),
        (c[5], "完好", "120.4x", LAT, "", "coordinate 经度: cannot read '120.4x' as a number"),
        (c[6], "坏了", LON, LAT, "", "部件状态 (status): '坏了' is not one of 完好, 破损, 丢失, 废弃, 占用"),
        ("320214010100001", "完好", LON, LAT, "", "部件标识码应为16位数字"),
        ("3202149901000001", "完好", LON, LAT, "", "部件大类 99 不存在"),
        (c[7], "完好", LON, LAT, "2020-13-45", "设置日期 (installed_on): cannot read '2020-13-45' as date"),
        (c[8], "完好", LON, LAT, "", "duplicate key code=" + c[8]),
        (c[8], "破损", LON, LAT, "", "duplicate key code=" + c[8]),
        ("", "完好", LON, LAT, "", "部件标识码 (code) is required but empty"),
    ]
    frame = pd.DataFrame([r[:5] for r in rows], columns=["部件标识码", "部件状态", "经度", "纬度", "设置日期"])
    frame["备注"] = "巡查"
    frame["检查人"] = "张三"
    path = tmp_path / "部件.csv"
    frame.to_csv(path, index=False, encoding="gbk")
    result = run_file(db, "city_components", path)
    assert result.status == "succeeded"
    assert result.counts["read"] == len(rows) and result.counts["inserted"] == 1
    assert result.counts["quarantined"] == len(rows) - 1
    assert run_row(db, result.run_id)["ignored_columns"] == ["备注", "检查人"]
    held = quarantine(db, result.run_id)
    assert set(held) == set(range(2, len(rows) + 1))
    for number, row in enumerate(rows, start=1):
        if row[-1] is not None:
            assert row[-1] in held[number][0], (number, held[number][0])
    # the record is the row as sent, coordinates included, in the file's own words
    assert held[6][1]["经度"] == "120.4x" and held[6][1]["备注"] == "巡查"
    assert held[2][1]["geometry"] == f"POINT ({LAT} {LON})"


def test_reasons_for_projected_coordinates(db, tmp_path):
    c = component_codes(100, 4)
    e, n = TO_4549.transform(LON, LAT)
    frame = pd.DataFrame({"code": c, "status": "完好",
                          "x": [e, 40_000_000 + e, n, LON], "y": [n, n, e, LAT]})
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    result = run_file(db, "city_components", path, crs="EPSG:4549")
    assert result.counts["inserted"] == 1
    held = quarantine(db, result.run_id)
    assert "eastings carry the zone prefix 40: looks like EPSG:4528 (zone prefix 40)" in held[2][0]
    assert "x and y look swapped" in held[3][0]
    assert "degrees (longitude/latitude) read as projected metres" in held[4][0]
    unprefixed = run_file(db, "city_components", path, crs="EPSG:4528")
    reason = quarantine(db, unprefixed.run_id)[1][0]
    assert "no zone prefix: looks like EPSG:4549" in reason and "--crs EPSG:4549" in reason


def test_wrong_missing_and_3d_geometries(db, tmp_path):
    c = component_codes(200, 4)
    frame = gpd.GeoDataFrame({"code": c, "status": "完好"}, crs=4326, geometry=[
        shapely.Point(LON, LAT, 12.5), shapely.LineString([(LON, LAT), (LON + 0.01, LAT)]), None,
        shapely.MultiPoint([(LON, LAT + 0.001)])])
    path = tmp_path / "mixed.geojson"
    frame.to_file(path)
    result = run_file(db, "city_components", path)
    assert result.counts["inserted"] == 2  # the 3D point, flattened, and the one-point MultiPoint
    assert result.ignored == ["z (heights; the layer is 2D)"]
    held = quarantine(db, result.run_id)
    assert held[2][0] == "geometry is a LineString; layer 'city_components' holds Point features"
    assert held[3][0] == "geometry is missing or empty"
    with db.connect() as conn:
        stored = dict(conn.execute(text("SELECT code, ST_AsText(geom) FROM layers.city_components "
                                        "WHERE code = ANY(:c)"), {"c": c}).all())
    assert stored == {c[0]: f"POINT({LON} {LAT})", c[3]: f"POINT({LON} {LAT + 0.001})"}


def test_out_of_range_and_invalid_codes(db, tmp_path):
    path = tmp_path / "stations.csv"
    pd.DataFrame({"站点编码": ["WX-01", "WX 02", "WX-03"], "站点名称": ["甲", "乙", "丙"],
                  "评价类型": ["river", "river", "river"], "水质目标类别": ["3", "2", "7"],
                  "经度": [LON, LON, LON], "纬度": [LAT, LAT, LAT]}).to_csv(path, index=False)
    result = run_file(db, "monitoring_stations", path)
    assert result.counts["inserted"] == 1
    held = quarantine(db, result.run_id)
    assert "站点编码 (code): 站点编码应为1–32位字母、数字、-或_" in held[2][0]
    assert held[3][0] == "水质目标类别 (target_class): 7 is outside the plausible range 1–5"


def test_invalid_polygons_are_repaired_and_reported_or_rejected(db, tmp_path):
    d = 0.01
    bowtie = shapely.Polygon([(LON, LAT), (LON + d, LAT + d), (LON + d, LAT), (LON, LAT + d)])
    square = shapely.box(LON, LAT, LON + d, LAT + d)
    flat = shapely.Polygon([(LON, LAT), (LON + d, LAT), (LON + 2 * d, LAT)])
    frame = gpd.GeoDataFrame({"code": ["G1", "G2", "G3"], "name": ["一", "二", "三"]}, crs=4490,
                             geometry=[bowtie, square, flat])
    path = tmp_path / "grids.gpkg"
    frame.to_file(path, engine="pyogrio")
    result = run_file(db, "boundaries", path, layer="grids")
    assert result.status == "succeeded"
    assert (result.counts["inserted"], result.counts["repaired"], result.counts["quarantined"]) == (2, 1, 1)
    assert "cannot be repaired without changing its kind" in quarantine(db, result.run_id)[3][0]
    with db.connect() as conn:
        repairs = conn.execute(text("SELECT row_number, reason, record FROM twin.etl_repair WHERE run_id = :id"),
                               {"id": result.run_id}).all()
        stored = conn.execute(text("SELECT ST_AsText(geom), ST_IsValid(geom) FROM layers.grids WHERE code = 'G1'"))
        wkt, valid = stored.one()
    [(row, reason, record)] = repairs
    assert row == 1 and "Self-intersection" in reason
    assert shapely.equals_exact(shapely.from_wkt(record["geometry"]), bowtie, tolerance=1e-12)  # kept as sent
    assert record["name"] == "一"
    repaired = shapely.from_wkt(wkt)
    assert valid and repaired.geom_type == "MultiPolygon" and len(repaired.geoms) == 2
    assert repaired.area == pytest.approx(2 * (d / 2 * d / 2), rel=1e-9)  # two triangles meeting at the centre


def test_repeated_readings_the_last_usable_row_wins(engine, loaded, tmp_path):
    """A readings file repeating a station's time (as published files re-issue their last hours) loads the last
    usable row of each time and quarantines the earlier ones as superseded: nothing refused whole, nothing lost."""
    with engine.connect() as conn:
        station = conn.execute(text("SELECT code FROM layers.monitoring_stations ORDER BY code LIMIT 1")).scalar_one()
    rows = [  # 站点编码, 监测时间, 溶解氧, 氨氮
        (station, "2001-01-01 08:00", 7.0, 0.20),
        (station, "2001-01-01 12:00", 6.0, 0.30),
        (station, "2001-01-01 08:00", 7.5, 0.25),  # re-issued: wins over the first row
        (station, "2001-01-01 12:00", 6.5, 900),  # re-issued, but out of range: the earlier 12:00 row stays
        (station, "2001-01-01 16:00", 5.0, 0.40),
    ]
    path = tmp_path / "readings.csv"
    pd.DataFrame(rows, columns=["站点编码", "监测时间", "溶解氧", "氨氮"]).to_csv(path, index=False)
    try:
        result = run_file(engine, "water_quality", path)
        assert result.status == "succeeded" and result.counts["inserted"] == 3, result
        with engine.connect() as conn:
            stored = dict(conn.execute(text(
                "SELECT to_char(observed_at AT TIME ZONE 'Asia/Shanghai', 'HH24:MI'), \"do\" FROM layers.water_quality "
                "WHERE station_code = :s AND observed_at < '2001-01-02'"), {"s": station}).all())
        assert stored == {"08:00": 7.5, "12:00": 6.0, "16:00": 5.0}
        held = quarantine(engine, result.run_id)
        assert sorted(held) == [1, 4]
        assert held[1][0].startswith(f"superseded: a later row of this input has the same station_code={station}")
        assert "outside the plausible range" in held[4][0]
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.water_quality WHERE station_code = :s AND observed_at < '2001-01-02'"),
                         {"s": station})
