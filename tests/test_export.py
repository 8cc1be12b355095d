"""Downloads (`/collections/{layer}/export`): each format read back by GDAL or pyarrow with the right
features, values, coordinates and CRS; bbox, filter, datetime and as_of respected; large layers streamed."""

import io
import threading
import time
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pyogrio
import pyproj
import pytest
import shapely
from sqlalchemy import text

from layers.export import MAX_EXPORTS
from twin.auth import create_key

BOX = (120.35, 31.45, 120.45, 31.55)
CQL = "status IN ('破损', '丢失') AND installed_on >= DATE('2012-01-01')"
WHERE = f"status IN ('破损', '丢失') AND installed_on >= '2012-01-01' AND ST_Intersects(geom, " \
        f"ST_MakeEnvelope({', '.join(map(str, BOX))}, 4490))"
FORMATS = ["gpkg", "parquet", "csv", "geojson"]


def stored(engine, layer: str, where: str = "TRUE") -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(text(f"SELECT *, ST_AsBinary(geom) AS wkb FROM layers.{layer} WHERE {where} ORDER BY fid"),
                            conn)
    return frame.drop(columns="geom").set_index("fid")


def download(http, tmp_path: Path, layer: str, f: str, **params) -> Path:
    response = http.get(f"/collections/{layer}/export", params={"f": f, **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="{layer}.{f}"'
    path = tmp_path / f"{layer}.{f}"
    path.write_bytes(response.content)
    return path


def read_back(path: Path, f: str) -> gpd.GeoDataFrame:
    """The file as GDAL (or, for GeoParquet, pyarrow through geopandas) reads it, indexed by fid."""
    if f == "parquet":
        return gpd.read_parquet(path).set_index("fid")
    if f == "geojson":
        return pyogrio.read_dataframe(path, fid_as_index=True).rename_axis("fid")
    frame = pyogrio.read_dataframe(path, fid_as_index=(f == "gpkg"))
    return frame.set_index(frame.fid.astype(int)) if f == "csv" else frame.rename_axis("fid")


@pytest.mark.parametrize("f", FORMATS)
def test_each_format_holds_the_bbox_and_filter_selection(http, engine, tmp_path, f):
    expected = stored(engine, "city_components", WHERE)
    got = read_back(download(http, tmp_path, "city_components", f, bbox=",".join(map(str, BOX)), filter=CQL), f)
    assert 0 < len(got) == len(expected) and list(got.index) == list(expected.index)
    assert list(got.code) == list(expected.code) and list(got.status) == list(expected.status)
    assert [str(d)[:10] for d in got.installed_on] == [str(d) for d in expected.installed_on]
    points = shapely.from_wkb(expected.wkb.map(bytes))
    assert np.allclose(shapely.get_coordinates(got.geometry.values), shapely.get_coordinates(points), atol=1e-8)
    if f != "csv":  # CSV carries no CRS
        assert pyproj.CRS(got.crs).equals(pyproj.CRS("OGC:CRS84"), ignore_axis_order=True)


@pytest.mark.parametrize("f", ["gpkg", "parquet"])
def test_files_in_a_projected_crs_name_it(http, engine, tmp_path, f):
    expected = stored(engine, "rivers")
    got = read_back(download(http, tmp_path, "rivers", f, crs="EPSG:4549"), f)
    assert got.crs.to_epsg() == 4549 and list(got.index) == list(expected.index)
    project = pyproj.Transformer.from_crs(4490, 4549, always_xy=True)
    first = shapely.from_wkb(bytes(expected.wkb.iloc[0]))
    x, y = project.transform(*shapely.get_coordinates(first).T)
    assert np.allclose(shapely.get_coordinates(got.geometry.iloc[0]), np.column_stack([x, y]), atol=1e-3)
    assert got.geometry.iloc[0].geom_type == "MultiLineString"
    assert got.width_m.dtype == np.float64 and np.allclose(got.width_m, expected.width_m, equal_nan=True)


def test_csv_with_coordinate_columns_and_projected_crs(http, engine, tmp_path):
    expected = stored(engine, "pollution_sources")
    path = download(http, tmp_path, "pollution_sources", "csv", geometry="xy", crs="EPSG:4549")
    assert path.read_bytes().startswith("\ufefffid,credit_code,".encode())
    table = pd.read_csv(path, encoding="utf-8-sig", dtype={"credit_code": str, "industry_code": str})
    assert list(table.columns[-2:]) == ["x", "y"] and list(table.fid) == list(expected.index)
    assert list(table.key_unit.map({True: True, False: False})) == list(expected.key_unit)
    project = pyproj.Transformer.from_crs(4490, 4549, always_xy=True)
    x, y = project.transform(*shapely.get_coordinates(shapely.from_wkb(expected.wkb.map(bytes))).T)
    assert np.allclose(table.x, x, atol=1e-3) and np.allclose(table.y, y, atol=1e-3)
    lonlat = pd.read_csv(io.BytesIO(http.get("/collections/pollution_sources/export",
                                             params={"f": "csv", "geometry": "xy"}).content), encoding="utf-8-sig")
    assert list(lonlat.columns[-2:]) == ["lon", "lat"]


def test_series_layer_without_geometry(http, engine, tmp_path):
    with engine.connect() as conn:
        day = conn.execute(text("SELECT count(*) FROM layers.water_quality WHERE station_code = 'XW-001' AND "
                                "observed_at >= '2026-09-01T00:00:00+08' AND observed_at < '2026-09-02T00:00:00+08'"
                                )).scalar()
    params = {"filter": "station_code = 'XW-001'", "datetime": "2026-09-01"}
    table = pq.read_table(download(http, tmp_path, "water_quality", "parquet", **params)).to_pandas()
    assert 0 < len(table) == day and "geometry" not in table.columns
    assert str(table.observed_at.dt.tz) == "UTC" and table.do.dtype == np.float64
    gpkg = pyogrio.read_dataframe(download(http, tmp_path, "water_quality", "gpkg", **params), read_geometry=False)
    assert len(gpkg) == day and list(gpkg.ph) == list(table.ph)
    features = http.get("/collections/water_quality/export", params={"f": "geojson", **params}).json()["features"]
    assert len(features) == day and all(f["geometry"] is None for f in features)


@pytest.fixture
def edited(server, engine):
    """A component set to 占用 by the city-management department, and the moment before; undone afterwards."""
    with engine.begin() as conn:
        key = create_key(conn, "城市管理局", ["city_components"])
        fid, status = conn.execute(text("SELECT fid, status FROM layers.city_components WHERE status <> '占用' "
                                        "ORDER BY fid DESC LIMIT 1")).one()
    time.sleep(0.01)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT clock_timestamp()")).scalar()
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        url = f"/collections/city_components/items/{fid}"
        assert client.patch(url, json={"properties": {"status": "占用"}}).status_code == 200
        yield fid, before
        assert client.patch(url, json={"properties": {"status": status}}).status_code == 200


@pytest.mark.parametrize("f", FORMATS)
def test_as_of_exports_the_layer_as_it_was(http, engine, tmp_path, edited, f):
    fid, before = edited
    now = stored(engine, "city_components", "status = '占用'")
    params = {"filter": "status = '占用'"}
    current = read_back(download(http, tmp_path, "city_components", f, **params), f)
    then = read_back(download(http, tmp_path, "city_components", f, as_of=before.isoformat(), **params), f)
    assert list(current.index) == list(now.index) and fid in current.index
    assert list(then.index) == [i for i in now.index if i != fid]


@pytest.mark.parametrize("f", FORMATS)
def test_an_empty_selection_is_a_valid_empty_file(http, tmp_path, f):
    got = read_back(download(http, tmp_path, "city_components", f, filter="status = '不存在'"), f)
    assert len(got) == 0
    if f in ("gpkg", "parquet"):
        assert {"code", "status", "installed_on"} <= set(got.columns)


def _server_process(server: str) -> psutil.Process:
    port = server.rsplit(":", 1)[1]
    return next(p for p in psutil.process_iter(["cmdline"])
                if "uvicorn" in " ".join(p.info["cmdline"] or []) and port in (p.info["cmdline"] or []))


def _peak_growth(process: psutil.Process, url: str) -> tuple[int, int, dict]:
    """(bytes received, peak growth of the server's resident memory meanwhile, response headers)."""
    baseline, peak, done = process.memory_info().rss, [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss - baseline)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = 0
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                size += len(chunk)
    finally:
        done.set()
        sampler.join()
    return size, peak[0], dict(response.headers)


def test_a_large_layer_streams_in_bounded_memory(server, engine):
    """water_quality holds ~95,000 readings (a 34 MB GeoJSON): the server sends it chunked, row chunks from
    a server-side cursor, and its memory grows by far less than the download's size."""
    with engine.connect() as conn:
        readings = conn.execute(text("SELECT count(*) FROM layers.water_quality")).scalar()
    assert readings > 50_000
    process = _server_process(server)
    url = f"{server}/collections/water_quality/export?f=geojson"
    _peak_growth(process, url)  # the first run warms up the code paths and the allocator
    size, growth, headers = _peak_growth(process, url)
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    # A buffered body would grow the server by at least its size; a streamed one by a few row chunks,
    # plus allocator noise that reached ~9 MB on a busy 2-core machine.
    assert size > 30_000_000 and growth < size / 2, f"server memory grew {growth / 1e6:.1f} MB for {size / 1e6:.1f} MB"
    csv = httpx.get(f"{server}/collections/water_quality/export?f=csv", timeout=60)
    assert csv.headers["transfer-encoding"] == "chunked" and csv.text.count("\r\n") == readings + 1


def test_downloads_beyond_the_limit_are_refused_until_one_ends(server):
    url = f"{server}/collections/water_quality/export?f=geojson"
    with httpx.Client(timeout=30) as client:
        streams = [client.stream("GET", url) for _ in range(MAX_EXPORTS)]
        opened = [s.__enter__() for s in streams]  # headers in, bodies left unread: the server stays mid-download
        try:
            assert all(r.status_code == 200 for r in opened)
            busy = httpx.get(url, timeout=30)
            assert busy.status_code == 503 and busy.json()["code"] == "busy" and busy.headers["retry-after"]
        finally:
            for s in streams:
                s.__exit__(None, None, None)
    deadline = time.monotonic() + 20
    while (status := httpx.get(f"{server}/collections/streets/export?f=csv", timeout=30).status_code) == 503:
        assert time.monotonic() < deadline, "the slots of abandoned downloads were never freed"
        time.sleep(0.2)
    assert status == 200


BAD = [
    ("city_components", {}, 400, "invalid_parameter"),
    ("city_components", {"f": "shp"}, 400, "invalid_parameter"),
    ("city_components", {"f": "csv", "geometry": "wkb"}, 400, "invalid_parameter"),
    ("rivers", {"f": "csv", "geometry": "xy"}, 400, "invalid_parameter"),
    ("city_components", {"f": "gpkg", "bbox": "1,2,3"}, 400, "invalid_parameter"),
    ("city_components", {"f": "gpkg", "bbox": "120.5,31.5,120.4,31.6"}, 400, "invalid_parameter"),
    ("city_components", {"f": "gpkg", "bbox": "nan,1,2,3"}, 400, "invalid_parameter"),
    ("city_components", {"f": "parquet", "filter": "status = "}, 400, "invalid_filter"),
    ("city_components", {"f": "parquet", "filter": "colour = 'red'"}, 400, "unknown_field"),
    ("city_components", {"f": "parquet", "filter": "status = 1"}, 400, "invalid_filter"),
    ("city_components", {"f": "geojson", "filter": f"status = '{'x' * 50_000}'"}, 400, "invalid_filter"),
    ("city_components", {"f": "geojson", "filter": "status = 'x'; DROP TABLE layers.streets"}, 400, "invalid_filter"),
    ("city_components", {"f": "csv", "as_of": "yesterday"}, 400, "invalid_parameter"),
    ("city_components", {"f": "csv", "as_of": "2024-01-01"}, 400, "invalid_parameter"),
    ("city_components", {"f": "csv", "crs": "EPSG:9999"}, 400, "unsupported_crs"),
    ("city_components", {"f": "csv", "properties": "code,colour"}, 400, "unknown_field"),
    ("city_components", {"f": "csv", "datetime": "2024-13-01"}, 400, "invalid_parameter"),
    ("water_quality", {"f": "gpkg", "bbox": "120,31,121,32"}, 400, "invalid_parameter"),
    ("imagery", {"f": "gpkg"}, 404, "not_a_feature_layer"),
    ("no_such_layer", {"f": "gpkg"}, 404, "unknown_layer"),
]


@pytest.mark.parametrize("layer,params,status,code", BAD)
def test_bad_requests_say_what_is_wrong(http, layer, params, status, code):
    response = http.get(f"/collections/{layer}/export", params=params)
    assert response.status_code == status and response.json()["code"] == code, response.text
    assert response.json()["description"]


def test_properties_choose_the_columns(http, engine, tmp_path):
    got = read_back(download(http, tmp_path, "streets", "gpkg", properties="name"), "gpkg")
    assert list(got.columns) == ["name", "geometry"] and len(got) == len(stored(engine, "streets"))
