"""Vector tiles over HTTP against the loaded district: contents checked against SQL and independent
tile math, metadata (tile matrix sets, tilesets, TileJSON), errors, ETag/304, clustering, GDAL."""

import random
from collections import Counter
from datetime import datetime, timezone

import morecantile
import pyogrio
import pytest
from pyproj import CRS
from sqlalchemy import text

from layers.catalog import catalog, get_layer
from tests.tile_support import (EXTENT, MERCATOR, TO_MERCATOR, buffered, decode, in_mercator_box,
                                mercator_tile, points, tile_url)
from tiles.tms import GRID, address

MVT = "application/vnd.mapbox-vector-tile"


def parent(tile: morecantile.Tile, z: int) -> morecantile.Tile:
    return morecantile.Tile(tile.x >> (tile.z - z), tile.y >> (tile.z - z), z)


@pytest.fixture(scope="module")
def components(engine, loaded):
    return points(engine, "city_components")


@pytest.fixture(scope="module")
def busy(components):
    """The zoom-14 tile with the most city components."""
    counts = Counter(mercator_tile(lon, lat, 14) for lon, lat in components.values())
    return counts.most_common(1)[0][0]


def test_tile_matrix_sets(http):
    listed = http.get("/tileMatrixSets").json()["tileMatrixSets"]
    assert [t["id"] for t in listed] == ["WebMercatorQuad", "WorldCRS84Quad", "CGCS2000Quad"]
    cgcs = http.get("/tileMatrixSets/CGCS2000Quad").json()
    assert cgcs["crs"].endswith("/EPSG/0/4490")
    first = cgcs["tileMatrices"][0]
    assert (first["matrixWidth"], first["matrixHeight"]) == (2, 1)
    assert first["pointOfOrigin"] == [90.0, -180.0]  # EPSG:4490 is lat, lon
    assert http.get("/tileMatrixSets/WebMercatorQuad").json()["crs"].endswith("/EPSG/0/3857")
    missing = http.get("/tileMatrixSets/EPSG4326")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_tile_matrix_set"


def test_layer_tile_is_every_feature_in_the_buffered_tile(http, engine, components, busy):
    response = http.get(tile_url("city_components", busy))
    assert response.status_code == 200 and response.headers["content-type"] == MVT
    features = decode(response.content)["city_components"]
    expected = in_mercator_box(components, buffered(MERCATOR.xy_bounds(busy)))
    assert len(expected) > 20
    assert sorted(f["id"] for f in features) == sorted(expected)
    one = next(f for f in features if f["id"] in in_mercator_box(components, MERCATOR.xy_bounds(busy)))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT code, status, class_name, installed_on::text, ST_X(geom), ST_Y(geom) "
                                "FROM layers.city_components WHERE fid = :fid"), {"fid": one["id"]}).one()
    props = one["properties"]
    assert (props["code"], props["status"], props["class_name"], props["installed_on"]) == tuple(row[:4])
    left, bottom, right, top = MERCATOR.xy_bounds(busy)
    x, y = TO_MERCATOR.transform(row[4], row[5])
    tx, ty = one["geometry"]["coordinates"]
    assert abs(tx - (x - left) / (right - left) * EXTENT) <= 1
    assert abs(ty - (top - y) / (top - bottom) * EXTENT) <= 1


def test_cgcs2000_tile_matches_lon_lat_box(http, components, busy):
    lon, lat = MERCATOR.lnglat(*MERCATOR.xy(*MERCATOR.ul(busy)))  # a corner of the busy Web Mercator tile
    grid = morecantile.TileMatrixSet.custom([-180, -90, 180, 90], CRS.from_epsg(4490), matrix_scale=[2, 1])
    tile = grid.tile(lon, lat, 14)
    response = http.get(tile_url("city_components", tile, "CGCS2000Quad"))
    assert response.status_code == 200
    left, bottom, right, top = buffered(grid.xy_bounds(tile))
    expected = {fid for fid, (x, y) in components.items() if left <= x <= right and bottom <= y <= top}
    assert sorted(f["id"] for f in decode(response.content)["city_components"]) == sorted(expected)
    assert http.get(tile_url("city_components", tile, "WorldCRS84Quad")).status_code == 200


def test_properties_filter_and_as_of(http, engine, components, busy):
    url = tile_url("city_components", busy)
    only = decode(http.get(url, params={"properties": "code,status"}).content)["city_components"]
    assert {key for f in only for key in f["properties"]} == {"code", "status"}
    none = decode(http.get(url, params={"properties": ""}).content)["city_components"]
    assert all(f["properties"] == {} for f in none) and len(none) == len(only)

    intact = points(engine, "city_components", "status = '完好'")
    expected = in_mercator_box(intact, buffered(MERCATOR.xy_bounds(busy)))
    filtered = decode(http.get(url, params={"filter": "status = '完好'"}).content)["city_components"]
    assert sorted(f["id"] for f in filtered) == sorted(expected) and 0 < len(expected) < len(only)
    json_filter = '{"op": "=", "args": [{"property": "status"}, "完好"]}'
    same = http.get(url, params={"filter": json_filter, "filter-lang": "cql2-json"})
    assert sorted(f["id"] for f in decode(same.content)["city_components"]) == sorted(expected)

    before = http.get(url, params={"as_of": "2000-01-01T00:00:00Z"})
    assert before.status_code == 204 and "immutable" in before.headers["cache-control"]
    now = datetime.now(timezone.utc).isoformat()
    def by_id(tile: bytes) -> dict:  # MVT feature order carries no meaning; the as-of read unions two tables
        return {f["id"]: f for f in decode(tile)["city_components"]}

    assert by_id(http.get(url, params={"as_of": now}).content) == by_id(http.get(url).content)


def test_tilesets_and_tilejson(http, engine):
    spec = get_layer("city_components")
    listed = http.get("/collections/city_components/tiles").json()["tilesets"]
    schemes = [next(link["href"] for link in t["links"] if link["rel"].endswith("/tiling-scheme")) for t in listed]
    assert [href.rsplit("/", 1)[-1] for href in schemes] == ["WebMercatorQuad", "WorldCRS84Quad", "CGCS2000Quad"]
    item = next(link for link in listed[0]["links"] if link["rel"] == "item")
    assert item["href"].endswith("/{tileMatrix}/{tileRow}/{tileCol}") and item["type"] == MVT
    tileset = http.get("/collections/city_components/tiles/WebMercatorQuad").json()
    assert [m["tileMatrix"] for m in tileset["tileMatrixSetLimits"]] == [str(z) for z in range(6, 23)]

    tj = http.get("/collections/city_components/tiles/WebMercatorQuad/tilejson.json").json()
    with engine.connect() as conn:
        extent = conn.execute(text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                   "(SELECT ST_Extent(geom) e FROM layers.city_components) s")).one()
    assert tj["tilejson"] == "3.0.0"
    assert (tj["minzoom"], tj["maxzoom"]) == (spec.minzoom, spec.maxzoom)
    assert tj["bounds"] == pytest.approx(list(extent))
    assert tj["tiles"][0].endswith("/collections/city_components/tiles/WebMercatorQuad/{z}/{y}/{x}")
    fields = tj["vector_layers"][0]["fields"]
    assert tj["vector_layers"][0]["id"] == "city_components"
    assert fields["code"] == "String" and fields["point_count"] == "Number" and fields["installed_on"] == "String"
    narrowed = http.get("/collections/city_components/tiles/WebMercatorQuad/tilejson.json",
                        params={"properties": "status", "as_of": "2024-01-01T00:00:00Z"}).json()
    assert set(narrowed["vector_layers"][0]["fields"]) == {"status", "point_count"}
    assert "properties=status" in narrowed["tiles"][0] and "as_of=2024-01-01T00:00:00Z" in narrowed["tiles"][0]
    stations = http.get("/collections/monitoring_stations/tiles/WebMercatorQuad/tilejson.json").json()
    assert stations["vector_layers"][0]["fields"]["target_class"] == "Number"


@pytest.mark.parametrize("path, status, code", [
    ("/collections/nowhere/tiles/WebMercatorQuad/14/0/0", 404, "unknown_layer"),
    ("/collections/imagery/tiles/WebMercatorQuad/14/0/0", 404, "unknown_layer"),
    ("/collections/city_components/tiles/EPSG3857/14/0/0", 404, "unknown_tile_matrix_set"),
    ("/collections/city_components/tiles/WebMercatorQuad/25/0/0", 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/16384/0", 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/-1", 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/" + "9" * 40, 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/" + "9" * 5000, 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/%D9%A3/0", 400, "invalid_parameter"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/x", 400, "invalid_parameter"),
    ("/collections/city_components/tiles/CGCS2000Quad/0/0/2", 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/5/0/0", 404, "zoom_out_of_range"),
    ("/collections/roads'%3B%20DROP%20TABLE%20layers.roads%3B--/tiles/WebMercatorQuad/9/0/0", 404, "unknown_layer"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/0?properties=code;drop", 400, "unknown_field"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/0?filter=nope%20%3D%201", 400, "unknown_field"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/0?filter=status%20%3D", 400, "invalid_filter"),
    ("/collections/city_components/tiles/WebMercatorQuad/14/0/0?as_of=yesterday", 400, "invalid_parameter"),
    ("/tiles/onemap/WebMercatorQuad/14/0/0?layers=roads,nowhere", 400, "unknown_layer"),
    ("/tiles/onemap/WebMercatorQuad/14/0/0?layers=imagery", 400, "unknown_layer"),
    ("/tiles/onemap/Nope/14/0/0", 404, "unknown_tile_matrix_set"),
])
def test_bad_requests_say_what_and_where(http, path, status, code):
    response = http.get(path)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["description"]


def test_huge_and_empty_inputs(http, busy):
    url = tile_url("city_components", busy)
    long = http.get(url, params={"filter": "status = '" + "x" * 40_000 + "'"})
    assert long.status_code == 204
    huge = http.get(url, params={"filter": "status = '" + "x" * 60_000 + "'"})
    assert huge.status_code == 400 and huge.json()["code"] == "invalid_filter"
    deep = http.get(url, params={"filter": "(" * 3000 + "status = 'x'" + ")" * 3000})
    assert deep.status_code == 204
    unbalanced = http.get(url, params={"filter": "(" * 3000 + "status = 'x'" + ")" * 2999})
    assert unbalanced.status_code == 400 and unbalanced.json()["code"] == "invalid_filter"
    many = http.get(url, params={"properties": ",".join(["code"] * 5000)})
    assert many.status_code == 400
    sea = http.get("/collections/city_components/tiles/WebMercatorQuad/14/8000/1000")  # far from Wuxi
    assert sea.status_code == 204 and sea.content == b"" and sea.headers["etag"]
    empty_onemap = http.get("/tiles/onemap/WebMercatorQuad/14/8000/1000")
    assert empty_onemap.status_code == 204


def test_etag_and_not_modified(http, busy):
    url = tile_url("roads", parent(busy, 12))
    first = http.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "public, no-cache"
    again = http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert again.headers["x-tile-cache"] == "hit"
    assert http.get(url, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert http.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    fresh = http.get(url + "?properties=name", headers={"If-None-Match": etag})  # another tile, not cached
    assert fresh.status_code == 200 and fresh.headers["x-tile-cache"] == "miss"


def test_onemap_has_one_layer_per_requested_layer(http, busy):
    chosen = ["city_components", "roads", "grids"]
    tile = parent(busy, 13)
    onemap = decode(http.get(f"/tiles/onemap/WebMercatorQuad/13/{tile.y}/{tile.x}",
                             params={"layers": ",".join(chosen)}).content)
    assert sorted(onemap) == sorted(chosen)
    for name in chosen:
        alone = decode(http.get(tile_url(name, tile)).content)[name]
        assert sorted(f["id"] for f in onemap[name]) == sorted(f["id"] for f in alone)

    low = parent(busy, 9)
    default = decode(http.get(f"/tiles/onemap/WebMercatorQuad/9/{low.y}/{low.x}").content)
    visible = {s.id for s in catalog().values() if s.kind == "vector" and s.minzoom <= 9 <= s.maxzoom}
    assert set(default) <= visible and {"roads", "districts", "rivers"} <= set(default)
    assert "city_components" in default and "grids" not in default  # grids start at 11
    skipped = decode(http.get(f"/tiles/onemap/WebMercatorQuad/9/{low.y}/{low.x}",
                              params={"layers": "roads,grids"}).content)
    assert list(skipped) == ["roads"]


def test_low_zoom_points_are_clustered(http, components):
    """City components start at zoom 6 and are clustered at 6 and 7: one feature per cell of a 16x16
    grid over the tile, with point_count and the most common status."""
    cells = 16
    for tile in {mercator_tile(lon, lat, 7) for lon, lat in components.values()}:
        features = decode(http.get(tile_url("city_components", tile)).content)["city_components"]
        left, bottom, right, top = MERCATOR.xy_bounds(tile)
        size = (right - left) / cells
        expected = Counter()
        for lon, lat in components.values():
            x, y = TO_MERCATOR.transform(lon, lat)
            if left <= x <= right and bottom <= y <= top:
                expected[(int((x - left) // size), int((top - y) // size))] += 1
        got = Counter()
        for f in features:
            tx, ty = f["geometry"]["coordinates"]
            got[(int(tx * cells // EXTENT), int(ty * cells // EXTENT))] += f["properties"]["point_count"]
            assert f["properties"]["status"] in get_layer("city_components").field("status").values
        assert got == expected
        assert len(features) < sum(expected.values())
    clustered_total = sum(f["properties"]["point_count"] for t in {mercator_tile(lo, la, 6) for lo, la in
                                                                   components.values()}
                          for f in decode(http.get(tile_url("city_components", t)).content)["city_components"])
    assert clustered_total == len(components)
    plain = decode(http.get(tile_url("city_components", mercator_tile(*components[min(components)], 12))).content)
    assert all("point_count" not in f["properties"] for f in plain["city_components"])


def test_dense_tiles_cluster_by_count(engine, components, busy):
    """Above the count threshold a tile clusters at any zoom (rendered here straight from the tile source)."""
    from tiles.settings import TileSettings
    from tiles.sources import LayerRequest, tile_statement
    from tiles.tms import address

    spec = get_layer("city_components")
    tile = address("WebMercatorQuad", 14, busy.x, busy.y)
    request = LayerRequest(spec, ("status",))
    with engine.connect() as conn:
        dense = conn.execute(tile_statement([request], tile, TileSettings(dense_points=5))).scalar_one()
        sparse = conn.execute(tile_statement([request], tile, TileSettings(dense_points=100_000))).scalar_one()
    inside = in_mercator_box(components, MERCATOR.xy_bounds(busy))
    clusters = decode(dense)["city_components"]
    assert sum(f["properties"]["point_count"] for f in clusters) == len(inside)
    assert len(decode(sparse)["city_components"]) == len(in_mercator_box(components, buffered(MERCATOR.xy_bounds(busy))))


def test_gdal_reads_a_tile_file(http, tmp_path, components, busy):
    data = http.get(tile_url("city_components", busy)).content
    path = tmp_path / "tile.mvt"
    path.write_bytes(data)
    frame = pyogrio.read_dataframe(path, layer="city_components", X=str(busy.x), Y=str(busy.y), Z=str(busy.z),
                                   CLIP="NO")  # keep the features in the tile's buffer too
    assert frame.crs.to_epsg() == 3857
    assert sorted(frame["mvt_id"]) == sorted(in_mercator_box(components, buffered(MERCATOR.xy_bounds(busy))))
    resolution = (MERCATOR.xy_bounds(busy).right - MERCATOR.xy_bounds(busy).left) / EXTENT
    for fid, geom in zip(frame["mvt_id"], frame.geometry):
        x, y = TO_MERCATOR.transform(*components[fid])
        assert abs(geom.x - x) <= resolution and abs(geom.y - y) <= resolution


def test_gdal_reads_the_ogc_api_tiles(server, engine, components):
    """GDAL's OGCAPI driver follows collection → tilesets → tileset → tiles and reads every component."""
    # GDAL places a vector tileset's extent correctly only in a lon/lat grid, and prefers WorldCRS84Quad anyway
    frame = pyogrio.read_dataframe(f"OGCAPI:{server}/collections/city_components", layer="Zoom level 12",
                                   API="TILES", TILEMATRIXSET="WorldCRS84Quad")
    with engine.connect() as conn:
        codes = set(conn.execute(text("SELECT code FROM layers.city_components")).scalars())
    assert set(frame["code"]) == codes


def test_polygons_smaller_than_a_pixel_are_left_out(http, engine):
    """A 0.1 m grid cell is invisible at zoom 11 and drawn at zoom 22."""
    lon, lat = 120.4321, 31.5123
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.grids (code, name, geom) VALUES ('TEST-TINY', 'tiny', "
                          "ST_Multi(ST_MakeEnvelope(:lon, :lat, :lon + 1e-6, :lat + 1e-6, 4490)))"),
                     {"lon": lon, "lat": lat})
    try:
        def names(z: int) -> set:
            tile = mercator_tile(lon, lat, z)
            response = http.get(tile_url("grids", tile), params={"properties": "code"})
            return {f["properties"].get("code") for f in decode(response.content).get("grids", [])}
        assert "TEST-TINY" not in names(11)
        assert "TEST-TINY" in names(22)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.grids WHERE code = 'TEST-TINY'"))


def test_tile_bounds_are_morecantiles_to_the_bit():
    rng = random.Random(7)
    for name, grid in GRID.items():
        for z in range(grid.minzoom, grid.maxzoom + 1):
            matrix = grid.matrix(z)
            for x, y in {(0, 0), (matrix.matrixWidth - 1, matrix.matrixHeight - 1),
                         *((rng.randrange(matrix.matrixWidth), rng.randrange(matrix.matrixHeight))
                           for _ in range(20))}:
                assert address(name, z, x, y).bounds == tuple(grid.xy_bounds(morecantile.Tile(x, y, z)))
