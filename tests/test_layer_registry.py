"""Layers at run time (issue 23): a department registers a layer by its spec, loads it, serves it everywhere a
built-in layer is served, changes it by versions and archives it; bad specs get a 422 that points at the key."""

import json
import time

import httpx
import pytest
from sqlalchemy import text

from layers.catalog import Title, shipped
from layers.registry import archive, change, ship
from tests.history_support import bearer
from tests.server_support import logged_server
from tests.test_cli import twin
from tests.tile_support import decode, mercator_tile
from twin.auth import create_key

GARDENS = "园林绿化局"
SPEC = f"""
id = "ancient_trees"
title = {{ zh = "古树名木", en = "Ancient and notable trees" }}
kind = "vector"
geometry = "Point"
cluster = true
key = ["code"]
department = "{GARDENS}"
group = "生态"
minzoom = 8
fields = [
  {{ name = "code", type = "text", zh = "古树编号", required = true, aliases = ["tree_no"] }},
  {{ name = "species", type = "text", zh = "树种" }},
  {{ name = "grade", type = "text", zh = "保护级别", values = ["一级", "二级", "三级"] }},
  {{ name = "age", type = "integer", zh = "树龄", unit = "年", min = 100, max = 5000 }},
]
"""
TREES = [("WX-0001", "银杏", "一级", 520, 120.40, 31.52), ("WX-0002", "香樟", "二级", 310, 120.41, 31.53),
         ("WX-0003", "圆柏", "三级", 130, 120.42, 31.54)]


@pytest.fixture(scope="module", autouse=True)
def archived_after(engine):
    """The layers this module registers leave the shared database's map when it is done (other modules draw every
    layer of the catalog)."""
    yield
    with engine.begin() as conn:
        for (layer,) in conn.execute(text("SELECT id FROM twin.layer WHERE state = 'active' AND NOT shipped")).all():
            archive(conn, layer, "test")


@pytest.fixture(scope="module")
def keys(engine):
    with engine.begin() as conn:
        return {"admin": create_key(conn, "信息中心", [], True), "gardens": create_key(conn, GARDENS, []),
                "urban": create_key(conn, "城市管理局", ["city_components"])}


def _register(http, key: str, body: str = SPEC, media: str = "application/toml") -> httpx.Response:
    return http.post("/admin/layers", content=body.encode(), headers=bearer(key) | {"content-type": media})


def _upload(http, key: str, layer: str, rows: list[dict]) -> dict:
    body = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props}
        for props, lon, lat in rows]}, ensure_ascii=False)
    answer = http.post(f"/etl/{layer}", headers=bearer(key), files={"file": ("trees.geojson", body.encode())})
    assert answer.status_code == 202, answer.text
    run = answer.headers["location"]
    for _ in range(300):
        state = http.get(run, headers=bearer(key)).json()
        if state["status"] in ("succeeded", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"the ETL run did not end: {state}")


@pytest.fixture(scope="module")
def trees(http_module, keys, engine):
    """The layer registered by the gardens department's key and loaded through the generic ETL job, by Chinese
    labels and an alias."""
    answer = _register(http_module, keys["gardens"])
    assert answer.status_code == 201, answer.text
    assert answer.json()["version"] == 1 and any("CREATE TABLE" in s for s in answer.json()["ddl"])
    rows = [({"tree_no": code, "树种": species, "保护级别": grade, "树龄": age}, lon, lat)
            for code, species, grade, age, lon, lat in TREES]
    run = _upload(http_module, keys["gardens"], "ancient_trees", rows)
    assert run["status"] == "succeeded" and run["counts"]["inserted"] == 3, run
    return "ancient_trees"


@pytest.fixture(scope="module")
def http_module(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def test_a_registered_layer_is_served_like_a_built_in_one(http_module, trees):
    http = http_module
    collection = http.get(f"/collections/{trees}")
    assert collection.status_code == 200 and collection.json()["title"]
    assert trees in [c["id"] for c in http.get("/collections").json()["collections"]]
    items = http.get(f"/collections/{trees}/items", params={"limit": 10}).json()
    assert sorted(f["properties"]["code"] for f in items["features"]) == ["WX-0001", "WX-0002", "WX-0003"]
    assert {f["properties"]["species"] for f in items["features"]} == {"银杏", "香樟", "圆柏"}
    tile = mercator_tile(120.41, 31.53, 14)
    mvt = http.get(f"/collections/{trees}/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}")
    assert mvt.status_code == 200 and trees in decode(mvt.content)
    onemap = http.get(f"/tiles/onemap/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}", params={"layers": f"{trees},city_components"})
    assert onemap.status_code == 200 and trees in decode(onemap.content)
    near = http.post("/query/nearest", json={"layers": [trees], "point": [120.40, 31.52], "k": 1}).json()
    assert near["features"][0]["properties"]["code"] == "WX-0001"
    changes = http.get("/changes", params={"layer": trees}).json()
    assert len([c for c in changes["changes"] if c["operation"] == "insert"]) == 3


def test_the_owner_changes_the_spec_by_versions(http_module, trees, keys, engine):
    http, key = http_module, keys["gardens"]
    spec = SPEC.replace('unit = "年", min = 100, max = 5000 },',
                        'unit = "年", min = 100, max = 5000 },\n  { name = "caretaker", type = "text", zh = "养护单位" },')
    added = http.put(f"/admin/layers/{trees}", content=spec.encode(),
                     headers=bearer(key) | {"content-type": "application/toml"})
    assert added.status_code == 200 and added.json()["version"] == 2 and added.json()["note"] == "added caretaker"
    assert "caretaker" in http.get(f"/collections/{trees}/queryables").json()["properties"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE layers.ancient_trees SET caretaker = '新吴区园林所', age = age + 1 "
                          "WHERE code = 'WX-0001'"))
    dropped = spec.replace('  { name = "age", type = "integer", zh = "树龄", unit = "年", min = 100, max = 5000 },\n', "")
    refused = http.put(f"/admin/layers/{trees}", content=dropped.encode(),
                       headers=bearer(key) | {"content-type": "application/toml"})
    assert refused.status_code == 422 and refused.json()["where"] == "fields", refused.text
    taken = http.put(f"/admin/layers/{trees}", params={"allow_loss": "true"}, content=dropped.encode(),
                     headers=bearer(key) | {"content-type": "application/toml"})
    assert taken.status_code == 200 and taken.json()["version"] == 3
    feature = http.get(f"/collections/{trees}/items", params={"code": "WX-0001"}).json()["features"][0]
    assert "age" not in feature["properties"] and feature["properties"]["caretaker"] == "新吴区园林所"
    with engine.connect() as conn:  # the dropped field's values stay in the layer's history
        ages = conn.execute(text("SELECT age FROM history.ancient_trees WHERE code = 'WX-0001' ORDER BY version")).all()
    assert [a for (a,) in ages] == [520]
    versions = http.get(f"/admin/layers/{trees}/versions", headers=bearer(key)).json()["versions"]
    assert [v["change"] for v in versions] == ["register", "change", "change"]
    assert http.get(f"/admin/layers/{trees}/versions", headers=bearer(keys["urban"])).status_code == 403
    unchanged = http.put(f"/admin/layers/{trees}", params={"allow_loss": "true"}, content=dropped.encode(),
                         headers=bearer(key) | {"content-type": "application/toml"})
    assert unchanged.status_code == 200 and unchanged.json()["changed"] is False


def test_archive_keeps_the_data_and_restore_brings_it_back(http_module, keys, engine):
    http, key = http_module, keys["gardens"]
    spec = SPEC.replace("ancient_trees", "old_wells").replace("古树名木", "古井")
    assert _register(http, key, spec).status_code == 201
    with engine.connect() as conn:
        before = conn.execute(text("SELECT coalesce(max(change_id), 0) FROM twin.change")).scalar()
    assert _upload(http, key, "old_wells", [({"code": "J-1"}, 120.45, 31.55)])["status"] == "succeeded"
    assert http.delete("/admin/layers/old_wells", headers=bearer(key)).json()["change"] == "archive"
    assert http.get("/collections/old_wells").status_code == 404
    feed = http.get("/changes", params={"after": before, "limit": 10000})  # its changes leave the feed with it
    assert feed.status_code == 200 and "old_wells" not in {c["layer"] for c in feed.json()["changes"]}
    again = _register(http, key, spec)
    assert again.status_code == 422 and "archived" in again.json()["description"]
    assert http.post("/admin/layers/old_wells/restore", headers=bearer(key)).status_code == 200
    assert http.get("/collections/old_wells/items").json()["features"][0]["properties"]["code"] == "J-1"
    rezoomed = http.put("/admin/layers/old_wells", content=spec.replace("minzoom = 8", "minzoom = 12").encode(),
                        headers=bearer(key) | {"content-type": "application/toml"})
    assert rezoomed.status_code == 200  # its default style follows the spec
    assert min(layer.get("minzoom", 0) for layer in http.get("/styles/old_wells").json()["layers"]) == 12


BAD = [
    ("fields/0/type", SPEC.replace('name = "code", type = "text"', 'name = "code", type = "varchar"')),
    ("id", SPEC.replace('id = "ancient_trees"', 'id = "select"')),
    ("id", SPEC.replace('id = "ancient_trees"', 'id = "Robert\'); DROP TABLE layers.rivers;--"')),
    ("fields/1/name", SPEC.replace('name = "species"', 'name = "order"')),
    ("fields/1/name", SPEC.replace('name = "species"', 'name = "code"')),
    ("fields/1/name", SPEC.replace('name = "species"', 'name = "geom"')),
    ("fields", SPEC.replace("fields = [", "fields = [" + "".join(
        f'{{ name = "f{i}", type = "text", zh = "字段{i}" }},' for i in range(101)))),
    ("department", SPEC.replace(GARDENS, "生态环境局")),
    ("key/0", SPEC.replace('key = ["code"]', 'key = ["tree_id"]')),
    ("body", "id = "),
    ("kind", SPEC.replace('kind = "vector"', 'kind = "raster"')),
    ("fields/0/check", SPEC.replace('required = true, aliases', 'required = true, check = "eval", aliases')),
    ("stations", SPEC.replace('geometry = "Point"\ncluster = true', 'stations = "rivers"')
     .replace('kind = "vector"', 'kind = "series"')),
    ("body", SPEC.replace('zh = "古树名木"', 'zh = "古树\\u0000名木"')),
]


@pytest.mark.parametrize("where, body", BAD, ids=[f"{w}-{i}" for i, (w, _) in enumerate(BAD)])
def test_a_bad_spec_gets_a_422_that_points_at_the_key(http_module, keys, engine, where, body):
    answer = _register(http_module, keys["gardens"], body.replace("ancient_trees", "bad_layer"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["where"] == where, answer.json()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('layers.bad_layer')")).scalar() is None


def test_who_may_register(http_module, keys):
    http = http_module
    assert http.post("/admin/layers", content=SPEC.encode()).status_code == 401
    taken = _register(http, keys["admin"], SPEC.replace("ancient_trees", "city_components"))
    assert taken.status_code == 422 and taken.json()["code"] == "layer_exists" and taken.json()["where"] == "id"
    big = http.post("/admin/layers", content=b"#" * (300 << 10), headers=bearer(keys["admin"]))
    assert big.status_code == 413
    assert _register(http, keys["admin"], "[1, 2]", "application/json").json()["where"] == "body"
    assert http.delete("/admin/layers/city_components", headers=bearer(keys["gardens"])).status_code == 422
    admin = bearer(keys["admin"]) | {"content-type": "application/toml"}
    other = http.put("/admin/layers/city_components", content=SPEC.encode(), headers=admin)
    assert other.status_code == 422 and other.json()["where"] == "id"  # the spec names another layer
    assert http.put("/admin/layers/no_such_layer", content=SPEC.replace("ancient_trees", "no_such_layer").encode(),
                    headers=admin).json()["code"] == "unknown_layer"
    assert http.post("/admin/layers/city_components/revert", params={"version": 99},
                     headers=admin).json()["code"] == "unknown_version"
    assert http.post("/admin/layers/city_components/restore", headers=admin).status_code == 404  # not archived
    assert http.get("/admin/layers/no_such_layer/versions", headers=admin).status_code == 404


def test_registration_is_atomic(http_module, keys, engine):
    """The database refuses the DDL half way (an index name is taken): no table, history or catalog row is left."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE layers.half_made_geom_idx (x integer)"))
    try:
        answer = _register(http_module, keys["admin"], SPEC.replace("ancient_trees", "half_made").replace(GARDENS, "信息中心"))
        assert answer.status_code == 422 and "refused" in answer.json()["description"], answer.text
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('layers.half_made'), to_regclass('history.half_made'), "
                                     "(SELECT count(*) FROM twin.layer WHERE id = 'half_made')")).one() == (None, None, 0)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE layers.half_made_geom_idx"))


def test_every_worker_sees_a_new_layer_without_a_restart(database_url, data_dir, keys, loaded):
    """Two workers: after a registration through one, new connections (to either) all find the layer. How soon is
    measured in bench/registry.py."""
    with logged_server(database_url, data_dir, data_dir / "registry-workers.log", workers=2) as base:
        with httpx.Client(base_url=base, timeout=10) as http:
            spec = SPEC.replace("ancient_trees", "stone_bridges").replace("古树名木", "古桥")
            assert _register(http, keys["gardens"], spec).status_code == 201
            found, deadline = 0, time.monotonic() + 10
            while found < 20 and time.monotonic() < deadline:
                with httpx.Client(base_url=base, timeout=10) as fresh:  # a new connection: either worker
                    found = found + 1 if fresh.get("/collections/stone_bridges").status_code == 200 else 0
            assert found == 20


def test_shipping_again_keeps_what_was_changed_at_run_time(engine):
    """`twin db upgrade` registers the shipped specs once; a run-time change to a shipped layer stands until a
    release changes its file."""
    shipped_spec = shipped()["metro_lines"]
    retitled = shipped_spec.model_copy(update={"title": Title(zh="地铁线路（新）", en="Metro lines (new)")})
    with engine.begin() as conn:
        assert ship(conn) == []
        assert change(conn, retitled, "test").change == "change"
    try:
        with engine.begin() as conn:
            assert ship(conn) == []
            assert conn.execute(text("SELECT spec->'title'->>'zh' FROM twin.layer WHERE id = 'metro_lines'")).scalar() \
                == "地铁线路（新）"
    finally:
        with engine.begin() as conn:
            change(conn, shipped_spec, "test")


def test_the_cli_registers_versions_and_archives(engine, tmp_path):
    spec = tmp_path / "benches.toml"
    spec.write_text(SPEC.replace("ancient_trees", "park_benches").replace("古树名木", "公园座椅"), "utf-8")
    added = twin("layers", "add", str(spec))
    assert added.returncode == 0 and "register, version 1" in added.stdout, added.stderr
    again = twin("layers", "add", str(spec))
    assert again.returncode == 1 and "exists already" in again.stderr
    key = twin("keys", "create", "--department", GARDENS, "--layers", "park_benches")
    assert key.returncode == 0 and key.stdout.startswith("twin_"), key.stderr
    versions = json.loads(twin("layers", "versions", "park_benches", "--json").stdout)
    assert [v["change"] for v in versions] == ["register"]
    assert twin("layers", "archive", "park_benches").returncode == 0
    listed = json.loads(twin("layers", "list", "--json").stdout)
    assert "park_benches" not in {layer["id"] for layer in listed} and "city_components" in {row["id"] for row in listed}
