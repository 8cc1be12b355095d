"""Raster tiles of the elevation COG (layer `imagery`) through titiler, checked against the COG itself."""

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.windows import from_bounds
from sqlalchemy import text

from tests.tile_support import MERCATOR, mercator_tile
from tiles.raster import is_tiff

CENTRE = (120.43, 31.50)


@pytest.fixture(scope="module")
def cog(engine, loaded) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT path FROM twin.raster_source WHERE layer = 'imagery'")).scalar_one()


@pytest.fixture(scope="module")
def elevation(cog):
    with rasterio.open(cog) as src:
        band = src.read(1, masked=True)
        return float(band.min()), float(band.max())


def test_png_tile_with_rescale_and_colormap(http, cog):
    tile = mercator_tile(*CENTRE, 12)
    response = http.get(f"/raster/imagery/tiles/WebMercatorQuad/12/{tile.x}/{tile.y}.png",
                        params={"rescale": "0,60", "colormap_name": "terrain"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with MemoryFile(response.content) as memfile, memfile.open() as image:
        assert image.driver == "PNG" and (image.width, image.height) == (256, 256)
        rgba = image.read()
    assert rgba.shape[0] == 4
    # the opaque share of the tile is the share of that area holding data in the COG
    with rasterio.open(cog) as src:
        window = from_bounds(*MERCATOR.bounds(tile), transform=src.transform)
        valid = src.read_masks(1, window=window, boundless=True) > 0
    assert (rgba[3] == 255).mean() == pytest.approx(valid.mean(), abs=0.03)
    assert len(np.unique(rgba[:3].reshape(3, -1), axis=1)[0]) > 5  # a colour ramp, not a flat fill


@pytest.mark.parametrize("extension, media_type", [("webp", "image/webp"), ("jpeg", "image/jpeg")])
def test_other_formats(http, extension, media_type):
    tile = mercator_tile(*CENTRE, 12)
    response = http.get(f"/raster/imagery/tiles/WebMercatorQuad/12/{tile.x}/{tile.y}.{extension}",
                        params={"rescale": "0,60"})
    assert response.status_code == 200 and response.headers["content-type"] == media_type
    with MemoryFile(response.content) as memfile, memfile.open() as image:
        assert (image.width, image.height) == (256, 256)


def test_info_statistics_point_match_the_cog(http, cog, elevation):
    info = http.get("/raster/imagery/info").json()
    west, south, east, north = info["bounds"]
    assert 120.2 < west < east < 120.7 and 31.3 < south < north < 31.7
    assert info["dtype"] == "float32"
    stats = http.get("/raster/imagery/statistics").json()["b1"]
    low, high = elevation
    assert low - 1 <= stats["min"] <= stats["max"] <= high + 1 and 0 <= stats["mean"] <= 100
    with rasterio.open(cog) as src:
        expected = next(src.sample([CENTRE]))[0]
    point = http.get(f"/raster/imagery/point/{CENTRE[0]},{CENTRE[1]}").json()
    assert point["values"][0] == pytest.approx(float(expected))
    tj = http.get("/raster/imagery/WebMercatorQuad/tilejson.json").json()
    assert tj["tiles"][0].startswith(str(http.base_url).rstrip("/") + "/raster/imagery/tiles/WebMercatorQuad/")
    assert tj["bounds"] == pytest.approx([west, south, east, north])


@pytest.mark.parametrize("path, status, code", [
    ("/raster/nowhere/info", 404, "unknown_layer"),
    ("/raster/roads/info", 404, "unknown_layer"),  # a vector layer
    ("/raster/imagery/tiles/WebMercatorQuad/12/0/0.png", 404, "tile_outside_data"),
    ("/raster/imagery/point/0,0", 404, "point_outside_data"),
    ("/raster/imagery/tiles/Nope/12/3417/1670.png", 400, "invalid_parameter"),
    ("/raster/imagery/tiles/WebMercatorQuad/12/3417/1670.png?colormap_name=nope", 400, "invalid_parameter"),
    ("/raster/imagery/tiles/WebMercatorQuad/12/3417/1670.png?rescale=a,b", 400, "invalid_parameter"),
    ("/raster/imagery/info?url=/etc/passwd", 200, None),  # no client-supplied path is ever read
])
def test_raster_errors(http, path, status, code):
    response = http.get(path)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
    else:
        assert response.json()["dtype"] == "float32"


def test_only_tiffs_are_served(tmp_path, cog):
    vrt = tmp_path / "trap.vrt"
    vrt.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
                   '<SimpleSource><SourceFilename>/etc/passwd</SourceFilename></SimpleSource>'
                   '</VRTRasterBand></VRTDataset>')
    assert is_tiff(cog) and not is_tiff(str(vrt)) and not is_tiff(str(tmp_path / "missing.tif"))


def test_the_limits_are_documented_where_titiler_declares_the_parameters(http):
    paths = http.get("/api").json()["paths"]

    def limits(path: str, method: str = "get") -> dict:
        schemas = {p["name"]: p["schema"] for p in paths[f"/raster/{{layer}}{path}"][method]["parameters"]}
        return {name: next((s.get("minimum", s.get("exclusiveMinimum")), s.get("maximum"))
                           for s in schema.get("anyOf", [schema]) if "maximum" in s)
                for name, schema in schemas.items() if any("maximum" in s for s in schema.get("anyOf", [schema]))}

    tile = limits("/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}")
    assert tile == {"tilesize": (1, 2048), "buffer": (0, 256), "padding": (0, 256)}
    assert limits("/tiles/{tileMatrixSetId}/{z}/{x}/{y}") == tile
    assert limits("/tiles/{tileMatrixSetId}") == {"minzoom": (0, 24), "maxzoom": (0, 24)}
    assert limits("/{tileMatrixSetId}/tilejson.json") == tile | {"minzoom": (0, 24), "maxzoom": (0, 24)}
    sizes = {"width": (1, 2048), "height": (1, 2048), "max_size": (1, 2048)}
    assert limits("/statistics") == sizes and limits("/statistics", "post") == sizes | {"cover_scale": (0, 1000)}
    assert limits("/info") == {} and limits("/point/{lon},{lat}") == {}


TILE = "/raster/imagery/tiles/WebMercatorQuad/12/3417/1670"


@pytest.mark.parametrize("path, where, words", [
    (f"{TILE}.png?padding=1000", "query.padding", "padding must lie between 0 and 256, not 1000"),
    (f"{TILE}?tilesize=nan", "query.tilesize", "between 1 and 2048"),
    ("/raster/imagery/WebMercatorQuad/tilejson.json?tilesize=4096", "query.tilesize", "between 1 and 2048"),
    ("/raster/imagery/WebMercatorQuad/tilejson.json?maxzoom=25", "query.maxzoom", "between 0 and 24"),
    ("/raster/imagery/statistics?height=3000", "query.height", "between 1 and 2048"),
    ("/raster/imagery/statistics?histogram_bins=20000", "query.histogram_bins", "between 1 and 10000"),
    ("/raster/imagery/statistics?algorithm_params={", "query.algorithm_params", "JSON object"),
    ("/raster/imagery/point/120.43,31.5?bidx=2", "query.bidx", "band 2; this layer has band 1 (b1)"),
])
def test_out_of_range_names_the_parameter_and_its_range(http, path, where, words):
    response = http.get(path)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_parameter" and body["where"] == where and words in body["description"], body


@pytest.mark.parametrize("path, where", [
    (f"{TILE}.png?tilesize=big", "query.tilesize"),  # titiler's declaration: an integer
    (f"{TILE}.png?buffer=0", "query.buffer"),  # titiler's: above 0
    ("/raster/imagery/statistics?histogram_bins=1.5", "query.histogram_bins"),  # titiler's pattern
])
def test_other_invalid_values_are_fastapis_validation_as_400(http, path, where):
    response = http.get(path)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_parameter" and body["where"][0]["where"] == where, body


def test_values_within_the_limits_are_served(http, cog):
    tile = http.get(f"{TILE}.png", params={"bidx": 1, "rescale": "0,60", "tilesize": 512, "buffer": 2, "padding": 1})
    assert tile.status_code == 200, tile.text
    with MemoryFile(tile.content) as memfile, memfile.open() as image:
        assert (image.width, image.height) == (516, 516)
    shaded = http.get(f"{TILE}.png", params={"algorithm": "hillshade", "algorithm_params": '{"azimuth": 45}'})
    assert shaded.status_code == 200 and shaded.content.startswith(b"\x89PNG"), shaded.text
    stats = http.get("/raster/imagery/statistics", params={"width": 64, "height": 64, "histogram_bins": "0,10,20,80",
                                                           "histogram_range": "0,80"})
    assert stats.status_code == 200, stats.text
    assert stats.json()["b1"]["histogram"][1] == [0, 10, 20, 80]
    tj = http.get("/raster/imagery/WebMercatorQuad/tilejson.json", params={"minzoom": 10, "maxzoom": 14})
    assert (tj.json()["minzoom"], tj.json()["maxzoom"]) == (10, 14)
    projected = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
        [13406000, 3697000], [13410000, 3697000], [13410000, 3701000], [13406000, 3697000]]]}}
    assert http.post("/raster/imagery/statistics", params={"coord_crs": "EPSG:3857"}, json=projected).status_code == 200
