"""Private layers over real HTTP: an admin switches pollution_sources, grids and imagery private, and every read
path then answers 401 without a key and 403 to a key that may not read them, while the owning department, a key
that lists the layer and an admin read everything; answers spanning layers (the catalog, the change feed, the
composite tile and style, /query) leave the private layers out for the others, tiles cached before the switch or
by the owner included; switching back makes them public again; the CLI switch reaches the server by NOTIFY."""

import os
import subprocess
import sys
import time
from pathlib import Path

import mapbox_vector_tile
import morecantile
import pytest
from shapely.geometry import shape

from layers.catalog import catalog
from twin.auth import create_key, revoke_key

SOURCES, GRIDS, IMAGERY = "pollution_sources", "grids", "imagery"
PRIVATE = (SOURCES, GRIDS, IMAGERY)
TMS = "WebMercatorQuad"
Z = 13
TWIN = Path(sys.executable).parent / "twin"
MERCATOR = morecantile.tms.get(TMS)


def private_by_spec(department: str | None = None) -> set[str]:
    """The layers shipped private (e.g. river_chief_contacts) that a key of `department` (None: no key) may not read."""
    return {s.id for s in catalog().values() if s.private and s.department != department}


def bearer(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
def keys(engine, loaded):
    with engine.begin() as conn:
        made = {"ecology": create_key(conn, "生态环境局", []),  # owns pollution_sources
                "urban": create_key(conn, "城市管理局", ["city_components"]),  # owns grids
                "water": create_key(conn, "水利局", [SOURCES]),  # lists pollution_sources
                "admin": create_key(conn, "管理员", [], is_admin=True),
                "revoked": create_key(conn, "生态环境局", [])}
        revoke_key(conn, made["revoked"].split("_")[1])
    return made


def switch(http, keys, layer: str, private: bool):
    answer = http.put(f"/admin/layers/{layer}/access", json={"private": private}, headers=bearer(keys["admin"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["private"] is private
    return answer


def tile_of(http, key: str) -> tuple[int, int, int]:
    """A tile at Z holding a pollution source, found through the owner's items."""
    found = http.get(f"/collections/{SOURCES}/items", params={"limit": 1}, headers=bearer(key)).json()
    lon, lat = found["features"][0]["geometry"]["coordinates"]
    tile = MERCATOR.tile(lon, lat, Z)
    return tile.z, tile.y, tile.x


def mvt(answer) -> dict:
    assert answer.status_code in (200, 204), answer.text
    return mapbox_vector_tile.decode(answer.content) if answer.status_code == 200 else {}


@pytest.fixture(scope="module")
def private(server, keys):
    """The three layers private; a composite tile (by an admin: the layers shipped private too) and a single-layer
    tile read (and cached) while public first."""
    from httpx import Client

    with Client(base_url=server, timeout=30) as http:
        z, y, x = tile_of(http, None)
        admin = bearer(keys["admin"])
        before = {"onemap": http.get(f"/tiles/onemap/{TMS}/{z}/{y}/{x}", headers=admin),
                  "single": http.get(f"/collections/{SOURCES}/tiles/{TMS}/{z}/{y}/{x}")}
        assert http.get(f"/tiles/onemap/{TMS}/{z}/{y}/{x}", headers=admin).headers["x-tile-cache"] == "hit"
        assert SOURCES in mvt(before["onemap"]) and mvt(before["single"])[SOURCES]["features"]
        try:
            for layer in PRIVATE:
                switch(http, keys, layer, True)
            yield (z, y, x), before
        finally:
            for layer in PRIVATE:
                switch(http, keys, layer, False)


def read_paths(http, keys, tile) -> list[str]:
    fid = http.get(f"/collections/{SOURCES}/items", params={"limit": 1},
                   headers=bearer(keys["ecology"])).json()["features"][0]["id"]
    z, y, x = tile
    base = f"/collections/{SOURCES}"
    return [base, f"{base}/items?limit=2", f"{base}/items/{fid}", f"{base}/queryables", f"{base}/export?f=csv",
            f"{base}/items/{fid}/history", f"{base}/changes?limit=2", f"{base}/diff?from=2000-01-01T00:00:00Z&limit=1",
            f"{base}/tiles", f"{base}/tiles/{TMS}", f"{base}/tiles/{TMS}/tilejson.json",
            f"{base}/tiles/{TMS}/{z}/{y}/{x}", f"/changes?layer={SOURCES}&limit=2"]


def test_every_read_path_of_a_private_layer_needs_a_key_that_may_read_it(http, keys, private, data_dir):
    paths = read_paths(http, keys, private[0])
    for path in paths:
        anonymous = http.get(path)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.json()["code"] == "private_layer" and "生态环境局" in anonymous.json()["description"]
        assert anonymous.headers["www-authenticate"] == "Bearer"
        other = http.get(path, headers=bearer(keys["urban"]))
        assert other.status_code == 403, (path, other.text)
        assert other.json()["code"] == "forbidden_layer" and "城市管理局" in other.json()["description"]
        assert http.get(path, headers=bearer(keys["revoked"])).status_code == 401, path
        for reader in ("ecology", "water", "admin"):
            assert http.get(path, headers=bearer(keys[reader])).status_code == 200, (path, reader)
    log = (data_dir / "server.log").read_text(errors="replace")
    assert f"refused a read of private layer {SOURCES} from 127.0.0.1: no key" in log
    assert f"refused a read of private layer {SOURCES} from 127.0.0.1: key {keys['urban'].split('_')[1]}" in log
    assert keys["urban"].split("_", 2)[2] not in log  # the whole secret (it may hold "_")


def test_the_owner_reads_the_same_features_as_the_public_did(http, keys, private):
    mine = http.get(f"/collections/{SOURCES}/items", params={"limit": 10000}, headers=bearer(keys["ecology"])).json()
    assert mine["numberMatched"] >= 300 and len(mine["features"]) == mine["numberMatched"]
    listed = http.get(f"/collections/{SOURCES}/items", params={"limit": 10000}, headers=bearer(keys["water"])).json()
    assert [f["id"] for f in listed["features"]] == [f["id"] for f in mine["features"]]


def test_raster_and_series_paths(http, keys, private):
    assert http.get(f"/raster/{IMAGERY}/info").status_code == 401
    assert http.get(f"/raster/{IMAGERY}/info", headers=bearer(keys["ecology"])).status_code == 403
    assert http.get(f"/raster/{IMAGERY}/info", headers=bearer(keys["admin"])).status_code == 200
    assert http.get(f"/collections/{GRIDS}/items?limit=1", headers=bearer(keys["ecology"])).status_code == 403
    assert http.get(f"/collections/{GRIDS}/items?limit=1", headers=bearer(keys["urban"])).status_code == 200


def test_the_catalog_lists_private_layers_only_to_their_readers(http, keys, private):
    def listed(key):
        answer = http.get("/collections", headers=bearer(key))
        assert answer.status_code == 200, answer.text
        return {c["id"] for c in answer.json()["collections"]}
    everyone = listed(keys["admin"])
    assert set(PRIVATE) <= everyone
    assert listed(None) == everyone - set(PRIVATE) - private_by_spec()
    assert listed(keys["ecology"]) == everyone - {GRIDS, IMAGERY} - private_by_spec("生态环境局")
    assert listed(keys["urban"]) == everyone - {SOURCES, IMAGERY} - private_by_spec("城市管理局")
    assert http.get("/collections", headers=bearer(keys["revoked"])).status_code == 401
    counted = set(http.get("/health").json()["features"])
    admin = set(http.get("/health", headers=bearer(keys["admin"])).json()["features"])
    assert counted == admin - set(PRIVATE) - private_by_spec()
    assert SOURCES not in counted and GRIDS not in counted


def test_the_change_feed_leaves_out_private_layers(http, keys, engine, private):
    from sqlalchemy import text
    with engine.connect() as conn:
        first = conn.execute(text("SELECT min(change_id) FROM twin.change WHERE layer = :l"), {"l": SOURCES}).scalar()
    after = first - 1
    admin = http.get("/changes", params={"after": after, "limit": 2000}, headers=bearer(keys["admin"])).json()
    seen = [(c["id"], c["layer"]) for c in admin["changes"]]
    assert any(layer == SOURCES for _, layer in seen)
    for key, hidden in ((None, set(PRIVATE) | private_by_spec()),
                        (keys["ecology"], {GRIDS, IMAGERY} | private_by_spec("生态环境局")),
                        (keys["urban"], {SOURCES, IMAGERY} | private_by_spec("城市管理局"))):
        expected = [i for i, layer in seen if layer not in hidden]
        page = http.get("/changes", params={"after": after, "limit": len(expected)}, headers=bearer(key)).json()
        assert [c["id"] for c in page["changes"]] == expected
        assert not {c["layer"] for c in page["changes"]} & hidden
    assert http.get("/changes", headers=bearer(keys["revoked"])).status_code == 401
    assert http.get("/changes", params={"layer": SOURCES}).status_code == 401


def test_composite_tiles_drop_private_layers_even_from_the_cache(http, keys, private):
    (z, y, x), before = private
    url = f"/tiles/onemap/{TMS}/{z}/{y}/{x}"
    public_layers = set(mvt(before["onemap"])) - {SOURCES, GRIDS} - private_by_spec()
    for _ in range(2):  # rendered, then from the fast path's cache
        anonymous = mvt(http.get(url))
        assert set(anonymous) == public_layers
    admin = http.get(url, headers=bearer(keys["admin"]))
    assert admin.headers["x-tile-cache"] == "hit"  # cached while all was public: right for who may read all
    assert admin.content == before["onemap"].content
    owner = mvt(http.get(url, headers=bearer(keys["ecology"])))
    assert owner[SOURCES]["features"] == mvt(before["onemap"])[SOURCES]["features"] and GRIDS not in owner
    assert SOURCES not in mvt(http.get(url, headers=bearer(keys["urban"])))
    assert SOURCES not in mvt(http.get(url, params={"layers": f"{SOURCES},roads"}))
    assert http.get(url, params={"layers": SOURCES}).status_code == 204
    assert http.get(url, headers=bearer(keys["revoked"])).status_code == 401


def test_a_tile_cached_for_its_owner_is_never_served_to_others(http, keys, private):
    z, y, x = private[0]
    url = f"/collections/{SOURCES}/tiles/{TMS}/{z}/{y}/{x + 1}"
    first = http.get(url, headers=bearer(keys["ecology"]))
    again = http.get(url, headers=bearer(keys["ecology"]))
    assert again.headers["x-tile-cache"] == "hit" and again.content == first.content
    for headers in ({}, bearer(keys["urban"]), {"If-None-Match": again.headers["etag"]}):
        refused = http.get(url, headers=headers)
        assert refused.status_code in (401, 403) and refused.headers["content-type"] == "application/json"
    single = f"/collections/{SOURCES}/tiles/{TMS}/{z}/{y}/{x}"
    assert http.get(single).status_code == 401  # cached while public, before the switch
    assert http.get(single, headers=bearer(keys["water"])).content == private[1]["single"].content


def test_the_composite_style_does_not_advertise_private_layers(http, keys, private):
    def style(key):
        body = http.get("/styles/onemap", headers=bearer(key)).json()
        drawn = {layer.get("metadata", {}).get("twin:layer") for layer in body["layers"]}
        return drawn, body["sources"]["onemap"]["tiles"][0]
    drawn, tiles = style(None)
    assert not drawn & set(PRIVATE) and SOURCES not in tiles and GRIDS not in tiles and "roads" in tiles
    assert not any(IMAGERY in str(source) for source in http.get("/styles/onemap").json()["sources"].values())
    drawn, tiles = style(keys["ecology"])
    assert SOURCES in drawn and SOURCES in tiles and GRIDS not in drawn


AREA = {"type": "Polygon", "coordinates": [[[120.30, 31.45], [120.60, 31.45], [120.60, 31.62], [120.30, 31.62],
                                            [120.30, 31.45]]]}


def test_spatial_queries_refuse_or_leave_out_private_layers(http, keys, private):
    bodies = {
        "nearest": {"point": [120.45, 31.5], "layers": ["roads", SOURCES], "k": 2},
        "within": {"layer": "city_components", "distance": 100, "of": {"layer": SOURCES, "where": {}}},
        "intersects": {"layers": [SOURCES], "geometry": AREA, "features": False},
        "aggregate": {"layer": SOURCES, "by": "streets"},
        "at": {"point": [120.45, 31.5], "layers": [GRIDS, "streets"]},
    }
    for query, body in bodies.items():
        anonymous = http.post(f"/query/{query}", json=body)
        assert anonymous.status_code == 401 and anonymous.json()["where"].startswith("body."), (query, anonymous.text)
        assert http.post(f"/query/{query}", json=body, headers=bearer(keys["urban" if query != "at" else "ecology"])
                         ).status_code == 403, query
    mine = http.post("/query/intersects", json=bodies["intersects"], headers=bearer(keys["ecology"]))
    assert mine.status_code == 200
    points = http.get(f"/collections/{SOURCES}/items", params={"limit": 10000}, headers=bearer(keys["admin"])).json()
    inside = sum(shape(AREA).intersects(shape(f["geometry"])) for f in points["features"])
    assert mine.json()["summary"][SOURCES]["count"] == inside
    grid = http.get(f"/collections/{GRIDS}/items", params={"limit": 1}, headers=bearer(keys["urban"])).json()
    inner = shape(grid["features"][0]["geometry"]).representative_point()
    point = {"point": [inner.x, inner.y]}

    def layers_at(key):
        return sorted(f["properties"]["layer"] for f in http.post("/query/at", json=point, headers=bearer(key))
                      .json()["features"])
    assert GRIDS in layers_at(keys["urban"])
    assert layers_at(None) == [name for name in layers_at(keys["urban"]) if name != GRIDS]


def test_trace_leaves_out_sources_the_caller_may_not_read(http, keys, private):
    river = http.get("/collections/rivers/items", params={"limit": 1}).json()["features"][0]["geometry"]
    start = river["coordinates"][0][len(river["coordinates"][0]) // 2]
    body = {"point": start, "direction": "downstream", "distance": 5000, "buffer": 2000}
    public = http.post("/query/trace", json=body)
    assert public.status_code == 200, public.text
    assert SOURCES not in public.json() and "monitoring_stations" in public.json()
    mine = http.post("/query/trace", json=body, headers=bearer(keys["ecology"])).json()
    assert SOURCES in mine and mine["reaches"] == public.json()["reaches"]


def test_only_an_admin_switches_and_bad_input_is_refused(http, keys, private):
    url = f"/admin/layers/{SOURCES}/access"
    assert http.put(url, json={"private": True}).status_code == 401
    refused = http.put(url, json={"private": False}, headers=bearer(keys["ecology"]))
    assert refused.status_code == 403 and refused.json()["code"] == "admin_only"
    admin = bearer(keys["admin"])
    for bad in ({"private": "no"}, {}, [], {"private": True, "extra": 1}, {"private": None},
                {"private": True, "note": "x" * 2_000_000}):
        answer = http.put(url, json=bad, headers=admin)
        assert answer.status_code == 400 and answer.json()["code"] == "invalid_parameter", bad
    assert http.put(url, content=b"{not json", headers=admin | {"content-type": "application/json"}).status_code == 400
    for name in ("no_such_layer", "x" * 5000, "%E4%B8%AD"):
        answer = http.put(f"/admin/layers/{name}/access", json={"private": True}, headers=admin)
        assert answer.status_code == 404 and answer.json()["where"] == "path.layer"
    for header in ("Bearer", "Basic abc", "Bearer twin_zz_", "Bearer " + "A" * 4000):
        answer = http.get(f"/collections/{SOURCES}", headers={"Authorization": header})
        assert answer.status_code == 401 and answer.json()["code"] in ("missing_key", "invalid_key"), header
    listing = http.get("/admin/layers/access", headers=admin).json()["layers"]
    states = {entry["layer"]: entry for entry in listing}
    assert states[SOURCES] == {"layer": SOURCES, "private": True, "default": False, "owner": "生态环境局"}
    assert [name for name, entry in states.items() if entry["private"]] == sorted(
        {*PRIVATE, *private_by_spec()}, key=list(states).index)
    assert http.get("/admin/layers/access", headers=bearer(keys["urban"])).status_code == 403


def test_switching_back_makes_a_layer_public_at_once(http, keys, private):
    (z, y, x), before = private
    switch(http, keys, SOURCES, False)
    try:
        assert http.get(f"/collections/{SOURCES}/items?limit=1").status_code == 200
        onemap = mvt(http.get(f"/tiles/onemap/{TMS}/{z}/{y}/{x}"))
        assert onemap[SOURCES]["features"] == mvt(before["onemap"])[SOURCES]["features"]
        assert http.get(f"/collections/{SOURCES}/tiles/{TMS}/{z}/{y}/{x}").content == before["single"].content
    finally:
        switch(http, keys, SOURCES, True)


def test_the_cli_switch_reaches_the_running_server(http, keys, private):
    station = http.get("/collections/monitoring_stations/items", params={"limit": 1}).json()["features"][0]
    series = f"/collections/water_quality/series?station={station['properties']['code']}"
    assert http.get(series).status_code == 200

    def cli(flag: str):
        subprocess.run([TWIN, "layers", "private", "water_quality", flag], check=True, capture_output=True,
                       env=os.environ.copy())

    def status_becomes(expected: int):
        deadline = time.monotonic() + 10
        while (status := http.get(series).status_code) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return status

    cli("--on")
    try:
        assert status_becomes(401) == 401
        assert http.get(series, headers=bearer(keys["urban"])).status_code == 403
        assert http.get(series, headers=bearer(keys["ecology"])).status_code == 200
    finally:
        cli("--off")
    assert status_becomes(200) == 200
    failed = subprocess.run([TWIN, "layers", "private", "no_such_layer", "--on"], capture_output=True, text=True,
                            env=os.environ.copy())
    assert failed.returncode == 1 and "unknown layer" in failed.stderr


def test_a_spec_makes_a_layer_private_by_default_and_a_switch_overrides_it():
    from layers.catalog import LayerSpec
    from twin.access import LayerAccess

    spec = LayerSpec(id="patrols", title={"zh": "巡逻", "en": "Patrols"}, kind="vector", geometry="Point",
                     department="公安局", group="安全", private=True)
    access = LayerAccess({spec.id: spec.private, "roads": False}, {spec.id: spec.department, "roads": "自然资源和规划局"})
    assert access.private() == {"patrols"}
    assert access.private({"patrols": False, "roads": True}) == {"roads"}
