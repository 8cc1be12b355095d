"""A layer's default style (layers.default_style.default_style), made from its spec alone: valid MapLibre, drawn by
geometry (clusters where the tiles cluster), in a colour that depends on the layer id only, within the spec's
zooms, and one that its owner could have sent (layers.style_check takes it)."""

import copy
import json
import subprocess

import pytest

from layers.catalog import LayerSpec
from tests.conftest import REPO
from layers.default_style import PALETTE, default_style
from layers.style_check import check

VALIDATOR = REPO / "node_modules" / ".bin" / "gl-style-validate"
FIELDS = [{"name": "code", "type": "text", "zh": "编码"}, {"name": "name", "type": "text", "zh": "名称"},
          {"name": "level", "type": "text", "zh": "等级", "values": ["一级", "二级"]},
          {"name": "dose", "type": "real", "zh": "剂量率", "unit": "nGy/h"}]


def spec(layer_id: str, geometry: str | None, kind: str = "vector", **more) -> LayerSpec:
    return LayerSpec(id=layer_id, title={"zh": "辐射监测点位", "en": "Radiation monitoring"}, kind=kind,
                     geometry=geometry, key=["code"], department="生态环境局", group="辐射环境", minzoom=8,
                     fields=[] if kind == "raster" else FIELDS, **more)


SPECS = {
    "radiation_points": spec("radiation_points", "Point", cluster=True),
    "video_points": spec("video_points", "MultiPoint"),
    "river_chiefs": spec("river_chiefs", "MultiLineString", maxzoom=18),
    "water_source_zones": spec("water_source_zones", "MultiPolygon"),
    "dem": spec("dem", None, kind="raster"),
}


def types(style: dict) -> list[str]:
    return [layer["type"] for layer in style["layers"]]


def test_default_styles_are_valid_maplibre_and_pass_the_owners_check(tmp_path):
    for layer_id, layer in SPECS.items():
        style = default_style(layer)
        assert check(layer_id, copy.deepcopy(style), "http://localhost") == style, layer_id
        path = tmp_path / f"{layer_id}.json"
        path.write_text(json.dumps(style, ensure_ascii=False), "utf-8")
        checked = subprocess.run([str(VALIDATOR), "--json", str(path)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and checked.stdout.strip() in ("", "[]"), (layer_id, checked.stdout)


def test_each_geometry_is_drawn_its_way():
    points = default_style(SPECS["radiation_points"])
    assert types(points) == ["circle", "symbol", "circle", "symbol"]
    cluster, count, single, label = points["layers"]
    assert cluster["filter"] == ["has", "point_count"] and count["layout"]["text-field"][1] == ["get", "point_count"]
    assert single["filter"] == label["filter"] == ["!", ["has", "point_count"]]
    assert label["layout"]["text-field"] == ["get", "name"]
    assert points["sources"] == {"radiation_points": {
        "type": "vector", "url": "/collections/radiation_points/tiles/WebMercatorQuad/tilejson.json"}}
    assert points["metadata"] == {"twin:layer": "radiation_points", "twin:search": ["code", "name", "level"]}
    assert points["name"] == "辐射监测点位"
    assert types(default_style(SPECS["video_points"])) == ["circle", "symbol"], "no clusters unless asked"
    assert "filter" not in default_style(SPECS["video_points"])["layers"][0]
    lines = default_style(SPECS["river_chiefs"])
    assert types(lines) == ["line", "symbol"] and lines["layers"][1]["layout"]["symbol-placement"] == "line"
    assert types(default_style(SPECS["water_source_zones"])) == ["fill", "line", "symbol"]
    raster = default_style(SPECS["dem"])
    assert types(raster) == ["raster"]
    assert raster["sources"]["dem"]["tiles"] == ["/raster/dem/tiles/WebMercatorQuad/{z}/{x}/{y}.png"]


def test_zooms_follow_the_spec():
    lines = default_style(SPECS["river_chiefs"])["layers"]
    assert all(layer["minzoom"] >= 8 and layer["maxzoom"] == 19 for layer in lines), "shown through zoom 18"
    points = default_style(SPECS["radiation_points"])["layers"]
    assert all(layer["minzoom"] >= 8 and "maxzoom" not in layer for layer in points)


def test_the_colour_depends_on_the_layer_id_only():
    def colour(layer: LayerSpec) -> str:
        return default_style(layer)["layers"][0]["paint"]["fill-color"]

    zones = SPECS["water_source_zones"]
    renamed = zones.model_copy(update={"title": zones.title.model_copy(update={"zh": "水源地"}), "group": "水环境"})
    assert colour(zones) == colour(renamed) in PALETTE
    others = {colour(spec(f"zones_{i}", "MultiPolygon")) for i in range(40)}
    assert len(others) > len(PALETTE) // 2, "layers are told apart"


def test_a_layer_without_geometry_has_no_style():
    with pytest.raises(ValueError, match="no geometry"):
        default_style(spec("dose_readings", None, kind="series"))
