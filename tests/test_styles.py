"""Styles: every served style is valid MapLibre, points at this server (also behind a proxy), draws
only catalog layers and fields, and is read from disk on each request."""

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.server_support import logged_server

VALIDATOR = REPO / "node_modules" / ".bin" / "gl-style-validate"
# Attributes the tiles add beside the catalog's fields: clusters' size and the viewer's station class.
EXTRA_ATTRIBUTES = {"point_count", "latest_class"}


def _gets(expression) -> set[str]:
    """Every field an expression reads with ["get", name]."""
    if not isinstance(expression, list):
        return set()
    found = {expression[1]} if expression[:1] == ["get"] and isinstance(expression[1], str) else set()
    for part in expression:
        found |= _gets(part)
    return found


def _style_urls(style: dict) -> list[str]:
    urls = [u for s in style["sources"].values() for u in [s.get("url"), *s.get("tiles", [])] if u]
    return urls + [style[k] for k in ("glyphs", "sprite") if isinstance(style.get(k), str)]


@pytest.fixture(scope="module")
def catalog(server):
    return {c["id"]: c for c in httpx.get(f"{server}/collections", timeout=30).json()["collections"]}


@pytest.fixture(scope="module")
def styles(server):
    listed = httpx.get(f"{server}/styles").json()["styles"]
    return {entry["id"]: httpx.get(f"{server}/styles/{entry['id']}").json() for entry in listed}


def test_every_style_is_valid_maplibre(styles, tmp_path):
    assert VALIDATOR.exists(), "the style validator is installed by `make setup` (npm install)"
    assert {"onemap", "city_components", "monitoring_stations"} <= set(styles)
    for name, style in styles.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(style, ensure_ascii=False), "utf-8")
        checked = subprocess.run([str(VALIDATOR), "--json", str(path)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and checked.stdout.strip() in ("", "[]"), (name, checked.stdout, checked.stderr)


def test_urls_are_on_the_server_and_resolve(styles, server, http):
    for name, style in styles.items():
        assert "glyphs" not in style, f"{name}: labels are drawn from local fonts, no glyph server"
        for url in _style_urls(style):
            assert url.startswith(f"{server}/"), (name, url)
    for name in ("districts", "city_components", "monitoring_stations"):
        tilejson = http.get(styles[name]["sources"][name]["url"].removeprefix(server))
        assert tilejson.status_code == 200, tilejson.text
        assert tilejson.json()["tiles"][0].startswith(server)
    # The composite asks for exactly the vector layers it draws, and the tile answers.
    composite = styles["onemap"]["sources"]["onemap"]["tiles"][0]
    drawn = {layer["source-layer"] for layer in styles["onemap"]["layers"] if "source-layer" in layer}
    assert set(composite.split("layers=")[1].split(",")) == drawn
    tile = http.get(composite.removeprefix(server).replace("{z}/{y}/{x}", "12/1669/3418"))
    assert tile.status_code in (200, 204), tile.text
    assert styles["onemap"]["sources"]["imagery"]["tiles"][0] == f"{server}/raster/imagery/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png"


def test_urls_follow_the_proxy_headers(http):
    behind = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gis.xinwu.example", "X-Forwarded-Prefix": "/onemap/"}
    style = http.get("/styles/onemap", headers=behind).json()
    urls = _style_urls(style)
    assert urls and all(u.startswith("https://gis.xinwu.example/onemap/") for u in urls), urls
    listed = http.get("/styles", headers=behind).json()["styles"]
    assert {s["links"][0]["href"] for s in listed} >= {"https://gis.xinwu.example/onemap/styles/onemap"}


def test_styles_draw_catalog_layers_and_fields(styles, catalog, http):
    vector = {i for i, c in catalog.items() if c["twin:kind"] == "vector"}
    raster = {i for i, c in catalog.items() if c["twin:kind"] == "raster"}
    per_layer = {name for name in styles if name != "onemap"}
    assert per_layer == vector | raster, "one style per map layer, named by its id"
    fields = {layer: set(http.get(f"/collections/{layer}/queryables").json()["properties"]) for layer in vector}
    for name, style in styles.items():
        for layer in style["layers"]:
            if "source-layer" not in layer:
                continue
            assert layer["source-layer"] in vector, (name, layer["id"])
            used = set().union(*(_gets(v) for v in [layer.get("filter"), *layer.get("paint", {}).values(),
                                                     *layer.get("layout", {}).values()]))
            unknown = used - fields[layer["source-layer"]] - EXTRA_ATTRIBUTES
            assert not unknown, (name, layer["id"], unknown)
    grouped = [layer for group in styles["onemap"]["metadata"]["twin:groups"] for layer in group["layers"]]
    assert sorted(grouped) == sorted(vector | raster), "every map layer in exactly one group"
    titles = [g["title"] for g in styles["onemap"]["metadata"]["twin:groups"]]
    # layers registered by other tests may bring groups of their own, after these
    assert titles[:5] == ["基础地理", "城市部件", "生态环境", "智慧排水", "水环境"]


def test_composite_draws_points_and_labels_over_areas(styles):
    layers = styles["onemap"]["layers"]
    kinds = [layer["type"] for layer in layers]
    assert kinds[0] == "background"
    order = ["background", "raster", "fill", "line", "circle", "symbol"]
    assert kinds == sorted(kinds, key=order.index)
    assert all(layer["source"] in ("onemap", "imagery") for layer in layers[1:])
    assert {l["metadata"]["twin:layer"] for l in layers[1:]} == {
        l for g in styles["onemap"]["metadata"]["twin:groups"] for l in g["layers"]}
    # Stations are coloured by feature-state keyed on their code.
    assert styles["onemap"]["sources"]["onemap"]["promoteId"] == {"monitoring_stations": "code"}


def test_water_classes_use_the_conventional_colours(styles):
    circle = next(l for l in styles["monitoring_stations"]["layers"] if l["type"] == "circle")
    match = circle["paint"]["circle-color"]
    colours = dict(zip(match[2:-1:2], match[3:-1:2]))
    assert sorted(colours) == [1, 2, 3, 4, 5, 6]
    assert circle["metadata"]["twin:labels"] == {"1": "Ⅰ类", "2": "Ⅱ类", "3": "Ⅲ类", "4": "Ⅳ类", "5": "Ⅴ类",
                                                 "6": "劣Ⅴ类"}

    def rgb(colour):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))

    blue = [rgb(colours[k]) for k in (1, 2)]
    assert all(b > r and b > g for r, g, b in blue), "Ⅰ/Ⅱ blue"
    r, g, b = rgb(colours[3])
    assert g > r and g > b, "Ⅲ green"
    r, g, b = rgb(colours[4])
    assert r > 200 and g > 180 and b < 80, "Ⅳ yellow"
    r, g, b = rgb(colours[5])
    assert r > 200 and 100 < g < 180 and b < 60, "Ⅴ orange"
    r, g, b = rgb(colours[6])
    assert r > 200 and g < 60 and b < 60, "劣Ⅴ red"


@pytest.mark.parametrize("name", ["nope", "ONEMAP", "onemap.json", "..%2F..%2Fetc%2Fpasswd", "layers%2Froads",
                                  "%E4%B8%80%E5%BC%A0%E5%9B%BE", "a" * 5000, "water_quality"])
def test_unknown_style_is_404_json(http, name):
    response = http.get(f"/styles/{name}")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] in ("unknown_style", "not_found")
    assert len(response.text) < 2000


@pytest.fixture(scope="module")
def styles_server(loaded, database_url, data_dir, tmp_path_factory):
    """A second server reading its styles from a copy we can edit."""
    directory = tmp_path_factory.mktemp("styles")
    shutil.copytree(REPO / "styles", directory, dirs_exist_ok=True)
    with logged_server(database_url, data_dir, directory / "server.log", styles_dir=str(directory)) as base:
        yield base, directory


def test_a_style_edited_on_disk_is_served_without_restart(styles_server):
    base, directory = styles_server
    path: Path = directory / "layers" / "rivers.json"
    style = json.loads(path.read_text("utf-8"))
    line = next(l for l in style["layers"] if l["id"] == "rivers-line")
    line["paint"]["line-color"] = "#123456"
    path.write_text(json.dumps(style, ensure_ascii=False), "utf-8")
    served = httpx.get(f"{base}/styles/rivers").json()
    assert next(l for l in served["layers"] if l["id"] == "rivers-line")["paint"]["line-color"] == "#123456"
    composite = httpx.get(f"{base}/styles/onemap").json()
    assert next(l for l in composite["layers"] if l["id"] == "rivers-line")["paint"]["line-color"] == "#123456"

    (directory / "night.json").write_text(json.dumps({"version": 8, "name": "夜间", "sources": {},
                                                       "layers": []}), "utf-8")
    assert "night" in [s["id"] for s in httpx.get(f"{base}/styles").json()["styles"]]
    assert httpx.get(f"{base}/styles/night").json()["name"] == "夜间"


def test_a_broken_style_file_is_reported_not_crashed(styles_server):
    base, directory = styles_server
    (directory / "layers" / "grids.json").write_text('{"version": 8, "layers": [', "utf-8")
    for name in ("grids", "onemap"):
        response = httpx.get(f"{base}/styles/{name}")
        assert response.status_code == 500
        assert response.json()["code"] == "broken_style"
        assert "grids.json" in response.json()["description"]
    shutil.copy(REPO / "styles" / "layers" / "grids.json", directory / "layers" / "grids.json")
    assert httpx.get(f"{base}/styles/onemap").status_code == 200
    # A group may list a layer that is not in the catalog (archived since): the map leaves it out.
    missing = json.loads((directory / "onemap.json").read_text("utf-8"))
    missing["metadata"]["twin:groups"][0]["layers"].append("no_such_layer")
    (directory / "onemap.json").write_text(json.dumps(missing), "utf-8")
    response = httpx.get(f"{base}/styles/onemap")
    assert response.status_code == 200
    assert "no_such_layer" not in response.text and "rivers-line" in response.text


def test_a_layer_without_a_style_is_not_drawn(styles_server):
    base, directory = styles_server
    (directory / "layers" / "gates.json").unlink()
    try:
        assert httpx.get(f"{base}/styles/gates").status_code == 404
        assert "gates" not in [s["id"] for s in httpx.get(f"{base}/styles").json()["styles"]]
        composite = httpx.get(f"{base}/styles/onemap").json()
        assert "gates" not in json.dumps(composite["metadata"])
        assert "gates" not in composite["sources"]["onemap"]["tiles"][0]
    finally:
        shutil.copy(REPO / "styles" / "layers" / "gates.json", directory / "layers" / "gates.json")


def test_a_catalog_layer_the_groups_do_not_list_joins_its_specs_group(styles_server):
    base, directory = styles_server
    composite = json.loads((REPO / "styles" / "onemap.json").read_text("utf-8"))
    for group in composite["metadata"]["twin:groups"]:
        group["layers"] = [layer for layer in group["layers"] if layer not in ("gates", "alerts")]
    (directory / "onemap.json").write_text(json.dumps(composite, ensure_ascii=False), "utf-8")
    served = httpx.get(f"{base}/styles/onemap").json()
    groups = {g["title"]: g for g in served["metadata"]["twin:groups"]}
    assert groups["智慧排水"]["layers"][-1] == "gates", "the group titled as the spec's group"
    titles = [g["title"] for g in served["metadata"]["twin:groups"]]
    assert titles.index("预警") >= 5 and groups["预警"] == {"id": "预警", "title": "预警", "layers": ["alerts"]}, \
        "a new group after the file's"
    alert_layers = [l for l in served["layers"] if l.get("metadata", {}).get("twin:layer") == "alerts"]
    assert alert_layers and all(l["metadata"]["twin:group"] == "预警" for l in alert_layers)
    assert "gates" in served["sources"]["onemap"]["tiles"][0].split("layers=")[1].split(",")
