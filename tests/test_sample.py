"""The synthetic district generator (etl.sample): determinism, geometry and code validity, realism."""

import csv
import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from rio_cogeo.cogeo import cog_validate

from etl.offset import gcj02_to_wgs84, transform_geometries
from etl.sample import generate
from layers.catalog import get_layer
from layers.codes import component_code, credit_code, industry_code, station_code

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
METRIC = "EPSG:4549"  # CGCS2000 / 3-degree Gauss-Kruger CM 120E
COMPONENTS, DAYS = 3000, 3
GPKG_LAYERS = ["streets", "grids", "roads", "rivers", "monitoring_stations", "city_components"]
NETWORK_LAYERS = ["pipes", "manholes", "pump_stations", "treatment_plants", "outfalls", "gates"]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("a"), components=COMPONENTS, days=DAYS)


@pytest.fixture(scope="module")
def district_degrees() -> shapely.Geometry:
    """新吴区 in CGCS2000 degrees, converted from the GCJ-02 source independently of the generator."""
    features = json.loads((REAL / "datav-boundaries" / "wuxi_districts_detailed_2019.geojson").read_text("utf-8"))["features"]
    feature = next(f for f in features if f["properties"]["adcode"] == 320214)
    return transform_geometries(np.array([shapely.geometry.shape(feature["geometry"])]), gcj02_to_wgs84)[0]


@pytest.fixture(scope="module")
def district(district_degrees) -> shapely.Geometry:
    return gpd.GeoSeries([district_degrees], crs="EPSG:4490").to_crs(METRIC).iloc[0]


def metric(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path).to_crs(METRIC)


def digests(paths: dict[str, Path]) -> dict[str, str]:
    return {layer: hashlib.sha256(path.read_bytes()).hexdigest() for layer, path in paths.items()}


def test_same_seed_same_bytes_other_seed_differs(out, tmp_path):
    again = generate(tmp_path / "b", components=COMPONENTS, days=DAYS)
    assert digests(again) == digests(out)
    other = digests(generate(tmp_path / "c", components=COMPONENTS, days=DAYS, seed=7))
    assert all(other[layer] != digest for layer, digest in digests(out).items())


def test_missing_real_data_dir_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_REAL_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError):
        generate(tmp_path / "out", components=10, days=1)


@pytest.mark.parametrize("layer", GPKG_LAYERS + NETWORK_LAYERS)
def test_layers_follow_their_spec(out, layer):
    spec = get_layer(layer)
    info = pyogrio.read_info(out[layer], layer=layer)
    assert list(info["fields"]) == [f.name for f in spec.fields]
    assert info["geometry_type"] == spec.geometry
    assert info["crs"] == "EPSG:4490"


@pytest.mark.parametrize("layer", GPKG_LAYERS)
def test_everything_lies_in_the_district(out, district, layer):
    table = metric(out[layer])
    if layer == "rivers":
        table = table[table["name"] != "京杭运河"]
    assert table.within(district.buffer(50.0)).all()


# Partition checks compare areas in degrees: new vertices on the district's long straight edges
# bend them by centimetres once projected, which alone adds a few hundred square metres.
def test_streets_partition_the_district(out, district_degrees):
    streets = gpd.read_file(out["streets"])
    assert sorted(streets["name"]) == sorted(["旺庄街道", "硕放街道", "江溪街道", "新安街道", "梅村街道", "鸿山街道"])
    assert sorted(streets["code"]) == [f"320214{i:03d}" for i in range(1, 7)]
    union = shapely.union_all(streets.geometry.values)
    assert union.area == pytest.approx(district_degrees.area, rel=1e-7)
    assert shapely.area(streets.geometry.values).sum() == pytest.approx(union.area, rel=1e-7)


def test_grids_tile_their_streets(out, district_degrees):
    grids, streets = gpd.read_file(out["grids"]), gpd.read_file(out["streets"])
    assert grids["code"].is_unique
    assert (grids["code"].str.len() == 12).all() and (grids["code"].str[:9] == grids["street_code"]).all()
    assert shapely.area(grids.geometry.values).sum() == pytest.approx(district_degrees.area, rel=1e-7)
    assert 0.2e6 < grids.to_crs(METRIC).area.median() < 1.0e6
    home = streets.set_index("code").geometry.loc[grids["street_code"]].values
    assert shapely.within(shapely.point_on_surface(grids.geometry.values), home).all()


def test_roads_are_named_and_classed(out):
    roads = gpd.read_file(out["roads"])
    assert roads["code"].is_unique and roads["name"].notna().all()
    assert set(roads["road_class"]) == {"快速路", "主干路", "次干路", "支路"}
    assert roads["lanes"].between(1, 12).all()


def test_components(out):
    table = gpd.read_file(out["city_components"])
    assert len(table) == COMPONENTS
    assert table["code"].is_unique
    assert all(component_code(c) is None for c in table["code"])
    assert (table["code"].str[6:8] == table["major_class"]).all() and (table["code"].str[8:10] == table["minor_class"]).all()
    assert set(table["street_code"]) == {f"320214{i:03d}" for i in range(1, 7)}
    assert set(table["status"]) <= {"完好", "破损", "丢失", "废弃", "占用"}
    assert (table["status"] == "完好").mean() > 0.8
    assert {"路灯", "污水井盖", "雨水井盖", "消防设施", "垃圾箱"} <= set(table["class_name"].value_counts().index[:12])
    assert pyogrio.read_info(out["city_components"])["ogr_types"][-1] == "OFTDate"


def test_pollution_sources_csv(out, district):
    raw = out["pollution_sources"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(out["pollution_sources"], encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["单位名称", "统一社会信用代码", "行业代码", "行业类别", "排污许可管理类别",
                             "环境监管重点单位", "排污许可证编号", "地址", "经度", "纬度"]
    assert len(rows) == max(300, COMPONENTS // 60)
    codes = [r["统一社会信用代码"] for r in rows]
    assert len(set(codes)) == len(codes) and all(credit_code(c) is None for c in codes)
    assert all(c.startswith("91320214") for c in codes)
    assert all(industry_code(r["行业代码"]) is None for r in rows)
    assert all(r["排污许可证编号"][:18] == r["统一社会信用代码"] and len(r["排污许可证编号"]) == 22 for r in rows)
    assert {r["环境监管重点单位"] for r in rows} == {"是", "否"}
    mix = pd.Series([r["排污许可管理类别"] for r in rows]).value_counts(normalize=True)
    assert set(mix.index) == {"重点管理", "简化管理", "登记管理"} and mix["重点管理"] < mix["登记管理"]
    assert len({r["单位名称"] for r in rows}) == len(rows)
    lon, lat = gcj02_to_wgs84([float(r["经度"]) for r in rows], [float(r["纬度"]) for r in rows])
    points = gpd.GeoSeries(shapely.points(lon, lat), crs="EPSG:4490").to_crs(METRIC)
    assert points.within(district.buffer(50.0)).all()


def test_stations_sit_on_rivers(out):
    stations, rivers = metric(out["monitoring_stations"]), metric(out["rivers"])
    assert len(stations) >= 30
    assert stations["code"].is_unique and all(station_code(c) is None for c in stations["code"])
    assert stations["name"].is_unique
    assert set(stations["evaluation_type"]) == {"river"}
    assert stations["target_class"].isin([3, 4]).mean() > 0.8
    assert (stations.distance(shapely.union_all(rivers.geometry.values)) < 1.0).all()
    assert set(stations["water_body"]) <= set(rivers["name"])


def test_river_network_is_a_tree_draining_to_the_canal(out):
    rivers = gpd.read_file(out["rivers"])
    assert {"伯渎港", "九里河", "新蠡河", "京杭运河"} <= set(rivers["name"])
    ends = [(tuple(np.round(c[0], 9)), tuple(np.round(c[-1], 9)))
            for c in (shapely.get_coordinates(g) for g in rivers.geometry)]
    nodes = {p for pair in ends for p in pair}
    parent = {p: p for p in nodes}

    def root(p):
        while parent[p] != p:
            p = parent[p]
        return p

    for a, b in ends:
        ra, rb = root(a), root(b)
        assert ra != rb, "cycle in the river network"
        parent[ra] = rb
    assert len({root(p) for p in nodes}) == 1, "river network not connected"
    starts = {a for a, _ in ends}
    outlets = [i for i, (_, b) in enumerate(ends) if b not in starts]
    assert len(outlets) == 1 and rivers["name"].iloc[outlets[0]] == "京杭运河"


def test_water_quality_readings(out):
    stations = gpd.read_file(out["monitoring_stations"])
    table = pd.read_csv(out["water_quality"], dtype={"station_code": str})
    assert list(table.columns) == ["station_code", "observed_at", "status", "water_temp", "ph", "do",
                                   "conductivity", "turbidity", "codmn", "nh3n", "tp", "tn"]
    assert len(table) == len(stations) * DAYS * 24
    assert set(table["station_code"]) == set(stations["code"])
    assert table["observed_at"].max() == "2026-10-31T23:00:00+08:00"
    assert not table.duplicated(["station_code", "observed_at"]).any()
    assert set(table["status"]) <= {"正常", "维护", "停站"} and "维护" in set(table["status"])
    assert (table["status"] == "正常").mean() > 0.9
    off = table["status"] != "正常"
    assert table.loc[off, "do":"tn"].isna().all().all() and table.loc[~off, "water_temp":"tn"].notna().all().all()

    real = pd.read_csv(REAL / "cnemc-water-quality" / "shazhu_daily_2020-05-10_to_2021-04-05.csv", na_values=["--", "*"])
    real = real[real["status"] == "正常"]
    for ours, theirs in [("do", "do_mg_l"), ("codmn", "codmn_mg_l"), ("nh3n", "nh3n_mg_l"), ("tp", "tp_mg_l")]:
        ratio = table[ours].median() / real[theirs].median()
        assert 0.5 < ratio < 2.0, (ours, ratio)


def test_elevation_is_a_valid_cog(out):
    import rasterio

    valid, errors, _ = cog_validate(out["imagery"])
    assert valid, errors
    with rasterio.open(out["imagery"]) as raster:
        assert raster.crs.to_epsg() == 4490 and raster.dtypes[0] == "float32" and raster.nodata is not None
        heights = raster.read(1, masked=True)
    assert 0.0 < heights.min() and 40.0 < heights.max() < 80.0 and 2.0 < np.ma.median(heights) < 10.0
