"""Hostile and malformed input (issue #10): huge, deep, non-finite, self-intersecting and swapped geometries,
injection in names, raster requests that would exhaust memory and unsafe uploads (slow clients:
test_slow_clients.py). Each gets a JSON 4xx saying what and where, and nothing is half-written (row and change
counts before and after).
What other modules already cover (filters, sortby, properties, bbox, bad JSON) is not repeated here."""

import io
import json
import time
import zipfile

import httpx
import numpy as np
import pytest
import shapely
from sqlalchemy import text

from tests.etl_support import drop_database, engine_for, private_database, serve, zipped
from twin.auth import create_key

DB = "twin_hostile"
GRIDS = "/collections/grids/items"
SQUARE = [[[120.91, 32.06], [120.92, 32.06], [120.92, 32.07], [120.91, 32.07], [120.91, 32.06]]]
BOWTIE = [[[120.91, 32.06], [120.92, 32.07], [120.92, 32.06], [120.91, 32.07], [120.91, 32.06]]]
FLAT = [[[120.91, 32.06], [120.92, 32.07], [120.91, 32.06], [120.92, 32.07], [120.91, 32.06]]]
MB = 1 << 20


def grid(code: str, rings) -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {"code": code, "name": "测试网格", "street_code": "320214001"}}


def zigzag(n: int) -> list:
    """A ring crossing itself about n times (its closing edge cuts every tooth)."""
    return [[[120.91 + 0.01 * i / n, 32.06 + 0.001 * (i % 2)] for i in range(n)] + [[120.91, 32.06]]]


def compact_polygon(vertices: int) -> bytes:
    """A Feature whose polygon has `vertices` two-digit positions (6 bytes each)."""
    return (b'{"type":"Feature","properties":{"code":"HX-BIG"},"geometry":{"type":"Polygon","coordinates":[['
            + b",".join([b"[1,2]"] * vertices) + b"]]}}")


@pytest.fixture(scope="module")
def site(database_url, data_dir):
    """(base URL, engine, key) of a server on a private database, uploads limited to 2 MB."""
    url = private_database(database_url, DB)
    engine = engine_for(url)
    with engine.begin() as conn:
        key = create_key(conn, "城市管理局", ["grids", "city_components"])
    try:
        with serve(url, data_dir, max_upload_mb="2") as base:
            yield base, engine, key
    finally:
        engine.dispose()
        drop_database(database_url, DB)


@pytest.fixture(scope="module")
def existing(site) -> int:
    """The id of a grid cell the tests replace."""
    with httpx.Client(base_url=site[0], headers={"Authorization": f"Bearer {site[2]}"}) as client:
        response = client.post(GRIDS, json=grid("HX-PUT", SQUARE))
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def api(site):
    with httpx.Client(base_url=site[0], timeout=60, headers={"Authorization": f"Bearer {site[2]}"}) as client:
        yield client


def state(engine) -> tuple[int, int, int]:
    """Rows of grids and city_components, and entries in the change log."""
    with engine.connect() as conn:
        return tuple(conn.execute(text("SELECT (SELECT count(*) FROM layers.grids), (SELECT count(*) FROM "
                                       "layers.city_components), (SELECT count(*) FROM twin.change)")).one())


def refused(response, status: int, code: str, where: str | None = None, words: str = "") -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["code"] == code, body
    assert words in body["description"], body
    if where is not None:
        assert body["where"] == where, body
    return body


def json_post(client, path: str, content, method: str = "POST"):
    return client.request(method, path, content=content, headers={"Content-Type": "application/json"})


def chunks(total: int):
    for _ in range(total // MB):
        yield b" " * MB


# -- request bodies ----------------------------------------------------------------------------------------

def test_huge_bodies_are_413_before_they_are_parsed(http, site, api):
    before = state(site[1])
    for client, path, limit in ((http, "/query/intersects", "2 MB"), (api, GRIDS, "8 MB")):
        declared = json_post(client, path, b"[" * (50 * MB))
        refused(declared, 413, "body_too_large", "body", limit)
        assert declared.headers["connection"] == "close"
        streamed = json_post(client, path, chunks(50 * MB))  # chunked: no Content-Length to refuse early
        refused(streamed, 413, "body_too_large", "body", limit)
    i = np.arange(2_000_000)
    ring = np.column_stack([120.4 + 0.1 * i / i.size, 31.4 + 0.001 * (i % 2)]).tolist() + [[120.4, 31.4]]
    polygon = json.dumps({"layers": ["rivers"], "geometry": {"type": "Polygon", "coordinates": [ring]}})
    assert len(polygon) > 40 * MB
    refused(json_post(http, "/query/intersects", polygon), 413, "body_too_large", "body")
    assert state(site[1]) == before
    assert http.get("/health").status_code == 200


def test_too_many_vertices_is_413_for_create_and_replace(site, api, existing):
    before = state(site[1])
    huge, large = compact_polygon(2_000_000), compact_polygon(150_000)
    assert len(huge) > 8 * MB > len(large)  # the first is too large a body, the second has too many vertices
    for method, path in (("POST", GRIDS), ("PUT", f"{GRIDS}/{existing}")):
        refused(json_post(api, path, huge, method), 413, "body_too_large", "body", "8 MB")
        refused(json_post(api, path, large, method), 413, "geometry_too_large", "geometry.coordinates", "150000")
    assert state(site[1]) == before


def test_a_hundred_thousand_levels_of_nesting(http, site, api, existing):
    before = state(site[1])
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    for path in ("/query/intersects", "/raster/imagery/statistics"):  # FastAPI's json.loads: RecursionError
        refused(json_post(http, path, deep), 400, "invalid_json", "body", "nested too deeply")
    fid = existing
    for method, path in (("POST", GRIDS), ("PUT", f"{GRIDS}/{fid}"), ("PATCH", f"{GRIDS}/{fid}")):
        refused(json_post(api, path, deep, method), 400, "invalid_json", "body", "depth limit")
    assert state(site[1]) == before


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_coordinates(http, site, api, existing, number):
    before = state(site[1])
    polygon = ('{"type":"Polygon","coordinates":[[[120.4,31.4],[%s,31.4],[120.5,31.5],[120.4,31.4]]]}' % number)
    query = json_post(http, "/query/intersects", '{"layers":["rivers"],"geometry":%s}' % polygon)
    refused(query, 400, "invalid_coordinates", "body.geometry", "finite")
    feature = '{"type":"Feature","properties":{"code":"HX-NAN"},"geometry":%s}' % polygon
    fid = existing
    for method, path in (("POST", GRIDS), ("PUT", f"{GRIDS}/{fid}")):
        refused(json_post(api, path, feature, method), 400, "invalid_json", "body")
    assert state(site[1]) == before


def test_self_intersections_are_repaired_or_refused(site, api):
    grids, components, changes = state(site[1])
    repaired = api.post(GRIDS, json=grid("HX-BOWTIE", BOWTIE))
    assert repaired.status_code == 201, repaired.text
    expected = shapely.make_valid(shapely.Polygon(BOWTIE[0]))  # two triangles meeting at the crossing
    stored = shapely.geometry.shape(repaired.json()["geometry"])
    assert stored.geom_type == "MultiPolygon" and len(stored.geoms) == 2
    assert stored.symmetric_difference(expected).area < 1e-12 and stored.area == pytest.approx(expected.area)
    assert state(site[1]) == (grids + 1, components, changes + 1)
    refused(api.post(GRIDS, json=grid("HX-FLAT", FLAT)), 422, "invalid_feature", "geometry",
            "cannot be repaired without changing its kind")
    refused(api.post(GRIDS, json=grid("HX-ZIGZAG", zigzag(20_000))), 422, "invalid_feature", "geometry",
            "too many vertices (20001) to repair automatically")
    assert state(site[1]) == (grids + 1, components, changes + 1)


def test_a_repairable_zigzag_is_repaired(site, api):
    before = state(site[1])
    response = api.post(GRIDS, json=grid("HX-TEETH", zigzag(2_000)))
    assert response.status_code == 201, response.text
    expected = shapely.make_valid(shapely.Polygon(zigzag(2_000)[0]), method="structure")
    assert shapely.geometry.shape(response.json()["geometry"]).symmetric_difference(expected).area < 1e-12
    assert state(site[1])[2] == before[2] + 1


def test_swapped_axes_are_refused_with_a_hint(http, site, api, existing):
    fid = existing
    before = state(site[1])
    swapped = [[[lat, lon] for lon, lat in SQUARE[0]]]
    refused(api.put(f"{GRIDS}/{fid}", json=grid("HX-PUT", swapped)), 422, "invalid_feature", "geometry",
            "axes look swapped")
    query = http.post("/query/intersects", json={"layers": ["rivers"], "crs": "EPSG:4326",
                                                 "geometry": {"type": "Polygon", "coordinates": SQUARE}})
    refused(query, 400, "invalid_coordinates", "body.geometry", "axis order lat, lon")
    assert state(site[1]) == before


# -- names that reach SQL --------------------------------------------------------------------------------------

INJECTION = "x'; DROP TABLE layers.city_components; --"
NAMES = [
    ("GET", f"/collections/{INJECTION}/items", None, 404),
    ("GET", "/collections/city_components%22%3B%20DROP%20TABLE%20x%3B--/items", None, 404),
    ("GET", f"/collections/{INJECTION}/tiles/WebMercatorQuad/12/3418/1669", None, 404),
    ("GET", f"/raster/{INJECTION}/info", None, 404),
    ("GET", f"/collections/city_components/items?crs={INJECTION}", None, 400),
    ("GET", f"/collections/city_components/items?bbox=120,31,121,32&bbox-crs={INJECTION}", None, 400),
    ("GET", f"/collections/city_components/items?as_of={INJECTION}", None, 400),
    ("POST", "/query/nearest", {"point": [120.4, 31.5], "layers": [INJECTION]}, 422),
    ("POST", "/query/nearest", {"point": [120.4, 31.5], "layers": ["rivers"], "crs": f"EPSG:4326{INJECTION}"}, 400),
    ("POST", "/query/intersects", {"layers": ["city_components"], "group_by": {"city_components": [INJECTION]},
                                   "geometry": {"type": "Polygon", "coordinates": SQUARE}}, 422),
    ("POST", "/query/aggregate", {"layer": "city_components", "by": "streets", "sum": INJECTION}, 422),
    ("POST", "/query/within", {"layer": "rivers", "distance": 5, "of": {"layer": "rivers", "where": {
        INJECTION: "x"}}}, 422),
]


@pytest.mark.parametrize("method, path, body, status", NAMES, ids=[f"{m}-{i}" for i, (m, *_) in enumerate(NAMES)])
def test_injection_in_names_is_a_4xx_and_harmless(http, engine, loaded, method, path, body, status):
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM layers.city_components")).scalar_one()
    response = http.request(method, path, json=body)
    assert response.status_code == status, response.text[:300]
    assert response.json()["description"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM layers.city_components")).scalar_one() == before


# -- raster requests (tiles/raster.py) ----------------------------------------------------------------------------

RASTER = "/raster/imagery"
TILE = f"{RASTER}/tiles/WebMercatorQuad/12/3417/1670"
RASTER_CASES = [
    (f"{RASTER}/statistics?expression=b5", "query.expression", "band 5; this layer has band 1 (b1)"),
    (f"{TILE}?expression=b9*2", "query.expression", "band 9"),
    (f"{TILE}.png?bidx=1&bidx=5", "query.bidx", "band 5"),
    (f"{TILE}.png?bidx=-1", "query.bidx", "band -1"),
    (f"{RASTER}/point/120.43,31.5?expression=b3", "query.expression", "band 3"),
    (f"{RASTER}/point/120.43,31.5?expression=__import__('os')", "query.expression", "__import__"),
    (f"{RASTER}/WebMercatorQuad/tilejson.json?minzoom=-6934646", "query.minzoom", "between 0 and 24"),
    (f"{RASTER}/tiles/WebMercatorQuad?maxzoom=556620834467808", "query.maxzoom", "between 0 and 24"),
    (f"{TILE}.png?tilesize=100000", "query.tilesize", "between 1 and 2048"),
    (f"{TILE}.png?buffer=1e9", "query.buffer", "between 0 and 256"),
    (f"{RASTER}/statistics?max_size=100000000", "query.max_size", "2048"),
    (f"{RASTER}/statistics?width=100000&height=100000", "query.width", "2048"),
    (f"{TILE}.png?algorithm=max&algorithm_params=null", "query.algorithm_params", "JSON object"),
    (f"{RASTER}/statistics?histogram_bins=0", "query.histogram_bins", "between 1 and 10000"),
    (f"{RASTER}/statistics?histogram_bins=3,2,1", "query.histogram_bins", "rising"),
    (f"{RASTER}/statistics?histogram_range=5,1", "query.histogram_range", "low,high"),
]


@pytest.mark.parametrize("path, where, words", RASTER_CASES, ids=[c[1] + str(i) for i, c in enumerate(RASTER_CASES)])
def test_raster_requests_that_would_fail_or_exhaust_memory_are_400(http, path, where, words):
    refused(http.get(path), 400, "invalid_parameter", where, words)


def test_raster_statistics_of_a_feature_without_geometry_is_400(http):
    response = http.post(f"{RASTER}/statistics", json={"type": "Feature", "geometry": None, "properties": {}})
    refused(response, 400, "invalid_parameter", None, "Invalid geometry")
    good = http.get(f"{TILE}.png", params={"expression": "b1*2", "rescale": "0,100", "tilesize": 256})
    assert good.status_code == 200 and good.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("position", [[1e300, 31.5], [-2.6e16, 31.5], [120.4, 91], [120.4]])
def test_raster_statistics_of_an_impossible_position_is_400(http, position):
    ring = [[120.4, 31.5], position, [120.41, 31.51], [120.4, 31.5]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    refused(http.post(f"{RASTER}/statistics", json=feature), 400, "invalid_geometry", "body.geometry",
            "coordinate pair")
    collection = {"type": "FeatureCollection", "features": [feature]}
    refused(http.post(f"{RASTER}/statistics", json=collection), 400, "invalid_geometry", "body.geometry", "±180")


# -- uploads ------------------------------------------------------------------------------------------------

def _zeros(megabytes: int, declared: int | None = None) -> bytes:
    """A zipped Shapefile of zeros (about 1,000-fold smaller), its header declaring `declared` bytes if given."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("bomb.shp", "w") as member:
            for _ in range(megabytes):
                member.write(bytes(MB))
    content = bytearray(out.getvalue())
    if declared is not None:  # the uncompressed size, in the local header (offset 22) and the central directory's
        content[22:26] = declared.to_bytes(4, "little")
        central = content.rindex(b"PK\x01\x02")
        content[central + 24:central + 28] = declared.to_bytes(4, "little")
    return bytes(content)


@pytest.mark.parametrize("name, content, words", [
    ("parts.zip", b"\x89PNG\r\n\x1a\n" + bytes(200), "named as a zipped dataset but its content is a PNG image"),
    ("parts.zip", zipped({"/etc/passwd.shp": b"\x00\x00\x27\x0a"}), "unsafe path '/etc/passwd.shp'"),
    ("parts.zip", zipped({"C:/Windows/x.shp": b"\x00\x00\x27\x0a"}), "unsafe path 'C:/Windows/x.shp'"),
    ("parts.zip", 256, "possible zip bomb"),  # 256 MB of zeros in 250 KB
])
def test_unsafe_uploads_fail_their_run_and_load_nothing(site, api, name, content, words):
    content = _zeros(content) if isinstance(content, int) else content
    assert len(content) < 2 * MB
    before = state(site[1])
    response = api.post("/etl/city_components", files={"file": (name, content)})
    refused(response, 422, "unusable_file", "file", words)
    run = api.get(response.headers["location"]).json()
    assert run["status"] == "failed" and words in run["error"]
    assert state(site[1]) == before


def test_a_zip_that_lies_about_its_size_fails_while_unpacking(site, api):
    before = state(site[1])
    response = api.post("/etl/city_components", files={"file": ("parts.zip", _zeros(64, declared=1000))})
    assert response.status_code == 202, response.text  # its directory looks harmless: the run finds out
    deadline = time.monotonic() + 30
    while (run := api.get(response.headers["location"]).json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # zipfile reads no more than the declared 1000 bytes, whose checksum then fails
    assert run["status"] == "failed" and "parts.zip cannot be unpacked: Bad CRC-32 for file 'bomb.shp'" in run["error"]
    assert state(site[1]) == before


def test_an_upload_must_declare_its_length(site, api):
    response = api.post("/etl/city_components", content=(b"--x\r\n" for _ in range(3)),
                        headers={"Content-Type": "multipart/form-data; boundary=x"})
    refused(response, 411, "length_required")
