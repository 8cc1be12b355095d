"""Stored styles over real HTTP: a layer's style stored in twin.layer_style wins over its file in the layer's own
style, the list and the composite; its owning department (or an admin) replaces it with `PUT /styles/{layer}`,
checked, and `DELETE` goes back to the file; anyone else is refused, and a bad or hostile style is a 4xx that
says where, storing nothing."""

import copy
import json

import pytest
from sqlalchemy import text

from twin.auth import create_key

LAYER = "rivers"  # 水利局's, with a style file
FILE_COLOUR = ["match", ["get", "river_class"], "流域性河道", "#3d8fd6", "骨干河道", "#5aa6e6", "支河", "#7dbbee",
               "沟渠", "#9fcdf2", "#7dbbee"]


def bearer(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
def keys(engine, loaded):
    with engine.begin() as conn:
        return {"water": create_key(conn, "水利局", []), "ecology": create_key(conn, "生态环境局", [LAYER]),
                "admin": create_key(conn, "管理员", [], is_admin=True)}


@pytest.fixture
def stored(engine):
    """Whatever a test stores is removed after it."""
    yield
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM twin.layer_style WHERE name IN ('rivers', 'grids')"))


def line_of(style: dict) -> dict:
    return next(layer for layer in style["layers"] if layer["id"] == "rivers-line")


def put(http, style, key, name=LAYER):
    body = style if isinstance(style, bytes) else json.dumps(style, ensure_ascii=False)
    return http.put(f"/styles/{name}", content=body, headers=bearer(key) | {"Content-Type": "application/json"})


def test_a_stored_style_wins_over_the_file_everywhere(http, engine, stored, server):
    style = http.get(f"/styles/{LAYER}").json()
    assert line_of(style)["paint"]["line-color"] == FILE_COLOUR
    style["name"], line_of(style)["paint"]["line-color"] = "河道（库）", "#abcdef"
    style["sources"][LAYER]["url"] = style["sources"][LAYER]["url"].removeprefix(server)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO twin.layer_style (name, style, changed_by) VALUES (:n, :s, 'test')"),
                     {"n": LAYER, "s": json.dumps(style)})
    served = http.get(f"/styles/{LAYER}").json()
    assert line_of(served)["paint"]["line-color"] == "#abcdef"
    assert served["sources"][LAYER]["url"] == f"{server}/collections/{LAYER}/tiles/WebMercatorQuad/tilejson.json"
    composite = http.get("/styles/onemap").json()
    assert line_of(composite)["paint"]["line-color"] == "#abcdef" and line_of(composite)["source"] == "onemap"
    listed = {s["id"]: s for s in http.get("/styles").json()["styles"]}
    assert listed[LAYER]["title"] == "河道（库）" and listed[LAYER]["twin:origin"] == "stored"
    assert listed["roads"]["twin:origin"] == "file" and "twin:origin" not in listed["onemap"]

    with engine.begin() as conn:  # a row written by hand, past the PUT's check
        conn.execute(text("UPDATE twin.layer_style SET style = '{\"version\": 8}' WHERE name = :n"), {"n": LAYER})
    for name in (LAYER, "onemap"):
        broken = http.get(f"/styles/{name}")
        assert broken.status_code == 500 and broken.json()["code"] == "broken_style", broken.text
        assert f"layer {LAYER}" in broken.json()["description"]


def test_the_owner_replaces_a_style_and_goes_back_to_the_file(http, engine, keys, stored, server):
    file_style = http.get(f"/styles/{LAYER}").json()
    mine = copy.deepcopy(file_style)  # as read: absolute URLs, taken back as server paths
    line_of(mine)["paint"]["line-color"] = "#102030"
    answer = put(http, mine, keys["water"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["changed_by"].startswith("水利局/") and body["replaced"] == file_style
    assert line_of(body["style"])["paint"]["line-color"] == "#102030"
    assert line_of(http.get(f"/styles/{LAYER}").json())["paint"]["line-color"] == "#102030"
    assert line_of(http.get("/styles/onemap").json())["paint"]["line-color"] == "#102030"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT style, changed_by FROM twin.layer_style WHERE name = :n"), {"n": LAYER}).one()
    assert row.style["sources"][LAYER]["url"] == f"/collections/{LAYER}/tiles/WebMercatorQuad/tilejson.json"
    assert row.style["metadata"]["twin:layer"] == LAYER and row.changed_by == body["changed_by"]

    line_of(mine)["paint"]["line-color"] = "#405060"
    by_admin = put(http, mine, keys["admin"])
    assert by_admin.status_code == 200 and line_of(by_admin.json()["replaced"])["paint"]["line-color"] == "#102030"

    back = http.delete(f"/styles/{LAYER}", headers=bearer(keys["water"]))
    assert back.status_code == 200, back.text
    assert back.json()["style"] == file_style and line_of(back.json()["replaced"])["paint"]["line-color"] == "#405060"
    assert http.get(f"/styles/{LAYER}").json() == file_style
    again = http.delete(f"/styles/{LAYER}", headers=bearer(keys["water"]))
    assert again.status_code == 200 and again.json()["replaced"] is None


def test_only_the_owner_or_an_admin_restyles_a_layer(http, keys, stored):
    style = http.get(f"/styles/{LAYER}").json()
    refusals = [(put(http, style, None), 401, "missing_key"),
                (put(http, style, "twin_abcd1234_not-a-real-secret"), 401, "invalid_key"),
                (put(http, style, keys["ecology"]), 403, "forbidden_layer"),  # it may write rivers' features
                (http.delete(f"/styles/{LAYER}", headers=bearer(keys["ecology"])), 403, "forbidden_layer"),
                (http.delete(f"/styles/{LAYER}"), 401, "missing_key"),
                (put(http, style, keys["water"], "no_such_layer"), 404, "unknown_layer"),
                (put(http, style, keys["admin"], "water_quality"), 404, "unknown_layer"),  # a series: no style
                (put(http, style, keys["admin"], "onemap"), 404, "unknown_layer"),
                (put(http, style, keys["admin"], "a" * 3000), 404, "unknown_layer")]
    for answer, status, code in refusals:
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert line_of(http.get(f"/styles/{LAYER}").json())["paint"]["line-color"] == FILE_COLOUR


def test_a_private_layers_style_is_for_those_who_may_read_it(http, engine, keys, stored):
    style = http.get("/styles/grids").json()
    switch = http.put("/admin/layers/grids/access", json={"private": True}, headers=bearer(keys["admin"]))
    assert switch.status_code == 200, switch.text
    try:
        with engine.begin() as conn:
            urban = create_key(conn, "城市管理局", [])  # owns grids
        assert http.get("/styles/grids").status_code == 401
        assert http.get("/styles/grids", headers=bearer(keys["water"])).status_code == 403
        assert http.get("/styles/grids", headers=bearer(urban)).json() == style
        assert "grids" not in [s["id"] for s in http.get("/styles").json()["styles"]]
        assert "grids" in [s["id"] for s in http.get("/styles", headers=bearer(urban)).json()["styles"]]
        assert put(http, style, keys["water"], "grids").status_code == 403
        assert put(http, style, urban, "grids").status_code == 200
    finally:
        http.put("/admin/layers/grids/access", json={"private": False}, headers=bearer(keys["admin"]))


def _layer(style, i=0):
    return style["layers"][i]


BAD = [  # (what the test does to a valid style of rivers, where the answer points)
    ("version 7", lambda s: s.update(version=7), "body.version"),
    ("version true", lambda s: s.update(version=True), "body.version"),
    ("no sources", lambda s: s.pop("sources"), "body.sources"),
    ("another's source id", lambda s: s["sources"].update(roads=s["sources"].pop(LAYER)), "body.sources.roads"),
    ("unknown source type", lambda s: s["sources"][LAYER].update(type="magic"), f"body.sources.{LAYER}.type"),
    ("outside host", lambda s: s["sources"][LAYER].update(url="https://tracker.example/t.json"),
     f"body.sources.{LAYER}.url"),
    ("scheme-relative host", lambda s: s["sources"][LAYER].update(url="//tracker.example/t.json"),
     f"body.sources.{LAYER}.url"),
    ("glyph server", lambda s: s.update(glyphs="https://fonts.example/{fontstack}/{range}.pbf"), "body.glyphs"),
    ("no layers", lambda s: s.update(layers=[]), "body.layers"),
    ("too many layers", lambda s: s.update(layers=[dict(_layer(s), id=f"{LAYER}-{i}") for i in range(101)]),
     "body.layers"),
    ("id twice", lambda s: s["layers"].append(dict(_layer(s))), "body.layers.2.id"),
    ("another layer's id", lambda s: _layer(s).update(id="roads-line"), "body.layers.0.id"),
    ("a background", lambda s: _layer(s).update(type="background"), "body.layers.0.type"),
    ("unknown type", lambda s: _layer(s).update(type="sparkle"), "body.layers.0.type"),
    ("type not text", lambda s: _layer(s).update(type=["line"]), "body.layers.0.type"),
    ("source type not text", lambda s: s["sources"][LAYER].update(type={"vector": 1}), f"body.sources.{LAYER}.type"),
    ("missing source", lambda s: _layer(s).update(source="nowhere"), "body.layers.0.source"),
    ("no source-layer", lambda s: _layer(s).pop("source-layer"), "body.layers.0.source-layer"),
    ("another's source-layer", lambda s: _layer(s).update({"source-layer": "roads"}), "body.layers.0.source-layer"),
    ("raster on vector", lambda s: _layer(s).update(type="raster"), "body.layers.0.source"),
    ("wrong paint", lambda s: _layer(s)["paint"].update({"circle-color": "#fff"}), "body.layers.0.paint.circle-color"),
    ("layout not an object", lambda s: _layer(s).update(layout="round"), "body.layers.0.layout"),
    ("zoom 30", lambda s: _layer(s).update(minzoom=30), "body.layers.0.minzoom"),
    ("unknown member", lambda s: _layer(s).update(onclick="alert(1)"), "body.layers.0.onclick"),
    ("another layer's metadata", lambda s: s["metadata"].update({"twin:layer": "roads"}), "body.metadata.twin:layer"),
    ("NUL in text", lambda s: s.update(name="河\x00道"), "body.name"),
    ("deep nesting", lambda s: _layer(s).update(filter=json.loads("[" * 60 + "]" * 60)), "body.layers.0.filter"),
    # judged by MapLibre's own validator (layers.style_spec)
    ("not a colour", lambda s: _layer(s)["paint"].update({"line-color": "bleu"}), "body.layers.0.paint.line-color"),
    ("unknown operator", lambda s: _layer(s)["paint"].update({"line-width": ["frobnicate", 1]}),
     "body.layers.0.paint.line-width"),
    ("bad filter", lambda s: _layer(s).update(filter=["==", ["get"], 1, 2, 3]), "body.layers.0.filter"),
]


@pytest.mark.parametrize("mutate,where", [(m, w) for _, m, w in BAD], ids=[name for name, _, _ in BAD])
def test_a_bad_style_is_refused_with_where(http, keys, stored, mutate, where):
    style = http.get(f"/styles/{LAYER}").json()
    mutate(style)
    answer = put(http, style, keys["water"])
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_style" and answer.json()["where"].startswith(where), answer.json()


def test_hostile_bodies_are_4xx_and_store_nothing(http, keys, stored):
    style = json.dumps(http.get(f"/styles/{LAYER}").json(), ensure_ascii=False)
    big = style.replace('"version": 8', f'"version": 8, "pad": "{"x" * (1 << 20)}"')
    chunks = (big.encode()[i:i + 65536] for i in range(0, len(big.encode()), 65536))  # no Content-Length
    answers = {
        "not JSON": (put(http, b"{", keys["water"]), 400),
        "not an object": (put(http, f"[{style}]".encode(), keys["water"]), 422),
        "NaN": (put(http, style.replace('"version": 8', '"version": NaN').encode(), keys["water"]), 400),
        "not UTF-8": (put(http, b"\xff\xfe{}", keys["water"]), 400),
        "nested past the parser": (put(http, b"[" * 200000 + b"]" * 200000, keys["water"]), 400),
        "lone surrogate": (put(http, style.replace('"version": 8', '"version": 8, "pad": "\\ud800"').encode(),
                               keys["water"]), 422),
        "over 1 MiB": (put(http, big.encode(), keys["water"]), 413),
        "over 1 MiB, chunked": (http.put(f"/styles/{LAYER}", content=chunks, headers=bearer(keys["water"])), 413),
    }
    for case, (answer, status) in answers.items():
        assert answer.status_code == status, (case, answer.text[:300])
        assert answer.json()["where"].startswith("body"), case
    assert line_of(http.get(f"/styles/{LAYER}").json())["paint"]["line-color"] == FILE_COLOUR


ZONES = {"id": "style_test_zones", "title": {"zh": "样式测试分区", "en": "Style test zones"}, "kind": "vector",
         "geometry": "MultiPolygon", "key": ["code"], "department": "园林绿化局", "group": "园林绿化", "minzoom": 9,
         "fields": [{"name": "code", "type": "text", "zh": "编码"}, {"name": "name", "type": "text", "zh": "名称"}]}


def test_a_registered_layer_is_styled_and_in_the_map_until_archived(http, engine):
    with engine.begin() as conn:
        gardens, admin = create_key(conn, "园林绿化局", []), create_key(conn, "管理员", [], is_admin=True)
    layer = ZONES["id"]
    registered = http.post("/admin/layers", json=ZONES, headers=bearer(gardens))
    assert registered.status_code == 201, registered.text
    try:
        style = http.get(f"/styles/{layer}").json()
        assert [l["id"] for l in style["layers"]] == [f"{layer}-fill", f"{layer}-outline", f"{layer}-label"]
        assert style["metadata"] == {"twin:layer": layer, "twin:search": ["code", "name"]}
        assert {s["id"]: s for s in http.get("/styles").json()["styles"]}[layer]["twin:origin"] == "stored"
        composite = http.get("/styles/onemap").json()
        groups = composite["metadata"]["twin:groups"]
        new = next(i for i, group in enumerate(groups) if group["title"] == "园林绿化")
        assert new >= 5 and groups[new]["id"] == "园林绿化" and layer in groups[new]["layers"]
        assert layer in composite["sources"]["onemap"]["tiles"][0].split("layers=")[1].split(",")
        assert composite["metadata"]["twin:layers"][layer]["twin:search"] == ["code", "name"]

        default = copy.deepcopy(style)
        style["layers"][0]["paint"]["fill-color"] = "#00ff00"
        assert put(http, style, gardens, layer).status_code == 200
        back = http.delete(f"/styles/{layer}", headers=bearer(gardens))
        assert back.status_code == 200 and back.json()["style"] == default, "no file: back to the default"
        assert http.get(f"/styles/{layer}").json() == default
        assert put(http, style, gardens, layer).status_code == 200
        archived = http.delete(f"/admin/layers/{layer}", headers=bearer(gardens))
        assert archived.status_code == 200, archived.text
        assert http.get(f"/styles/{layer}").status_code == 404
        composite = http.get("/styles/onemap").json()
        assert layer not in json.dumps(composite)
        assert all(group["title"] != "园林绿化" for group in composite["metadata"]["twin:groups"])
        restored = http.post(f"/admin/layers/{layer}/restore", headers=bearer(gardens))
        assert restored.status_code == 200, restored.text
        assert http.get(f"/styles/{layer}").json()["layers"][0]["paint"]["fill-color"] == "#00ff00"
    finally:
        http.delete(f"/admin/layers/{layer}", headers=bearer(admin))
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM twin.layer_style WHERE name = :n"), {"n": layer})
