"""Feature writes over HTTP (OGC API Features Part 4): create, replace, patch, delete, revert to a version,
with ETags and If-Match, department keys, and the ETL's validation — against a private database."""

import threading

import httpx
import pyproj
import pytest
import shapely
from shapely.geometry import Point
from sqlalchemy import text

from layers.features import etag_of
from tests.history_support import LAYER, bearer, credit_code, department_keys, private_server, snapshot, \
    source_feature

ITEMS = f"/collections/{LAYER}/items"


@pytest.fixture(scope="module")
def site(database_url, data_dir):
    with private_server(database_url, data_dir, "twin_edits") as (url, engine, base):
        with httpx.Client(base_url=base, timeout=30) as client:
            yield engine, client, department_keys(engine)


@pytest.fixture
def engine(site):
    return site[0]


@pytest.fixture
def api(site):
    return site[1]


@pytest.fixture
def keys(site):
    return site[2]


def changes(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT change_id, fid, operation, version, actor FROM twin.change "
                                 "ORDER BY change_id")).all()


def stored(engine, fid: int):
    with engine.connect() as conn:
        return conn.execute(text("SELECT name, address, key_unit, version, ST_AsBinary(geom) AS wkb "
                                 f"FROM layers.{LAYER} WHERE fid = :fid"), {"fid": fid}).first()


def create(api, keys, n: int, lon=120.93, lat=32.1, **props):
    response = api.post(ITEMS, json=source_feature(n, lon, lat, **props), headers=bearer(keys["ecology"]))
    assert response.status_code == 201, response.text
    return response


def test_create_returns_location_etag_and_stores_exactly(api, keys, engine):
    lon, lat = 120.93123456789012, 32.10987654321098
    response = create(api, keys, 1, lon, lat, address="新吴区 1 号")
    fid = response.json()["id"]
    assert response.headers["location"].endswith(f"{ITEMS}/{fid}")
    assert response.headers["etag"] == etag_of(LAYER, fid, 1) == f'"{LAYER}.{fid}.v1"'
    assert response.headers["content-type"].startswith("application/geo+json")
    body = response.json()
    assert body["properties"]["credit_code"] == credit_code(1) and body["properties"]["address"] == "新吴区 1 号"
    assert body["geometry"]["coordinates"] == [lon, lat]
    row = stored(engine, fid)
    assert bytes(row.wkb) == shapely.to_wkb(Point(lon, lat)) and row.version == 1
    prefix = keys["ecology"].split("_")[1]
    assert changes(engine)[-1][1:] == (fid, "insert", 1, f"生态环境局/{prefix}")
    read = api.get(response.headers["location"])
    assert read.json()["properties"]["name"] == "测试企业1"
    assert read.headers["etag"] == response.headers["etag"]  # a GET gives the ETag an editor sends back


def test_put_replaces_and_reads_the_content_crs(api, keys, engine):
    fid = create(api, keys, 2, address="旧址").json()["id"]
    to_gk = pyproj.Transformer.from_crs(4490, 4549, always_xy=True)
    x, y = to_gk.transform(120.95, 32.12)
    # EPSG:4549 is northing, easting in its authority axis order, as Part 2 asks
    feature = source_feature(2, y, x, name="新名字")
    response = api.put(f"{ITEMS}/{fid}", json=feature, headers=bearer(keys["ecology"]) | {
        "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/4549>", "If-Match": etag_of(LAYER, fid, 1)})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == etag_of(LAYER, fid, 2)
    row = stored(engine, fid)
    assert row.name == "新名字" and row.address is None  # left out of a PUT: cleared
    point = shapely.from_wkb(bytes(row.wkb))
    assert abs(point.x - 120.95) < 1e-9 and abs(point.y - 32.12) < 1e-9
    lat_lon = source_feature(2, 32.13, 120.96)
    response = api.put(f"{ITEMS}/{fid}", json=lat_lon, params={"crs": "EPSG:4326"}, headers=bearer(keys["ecology"]))
    assert response.json()["geometry"]["coordinates"] == [120.96, 32.13]


def test_patch_merges_clears_and_skips_no_ops(api, keys, engine):
    fid = create(api, keys, 3, address="甲", key_unit=True).json()["id"]
    headers = bearer(keys["ecology"]) | {"Content-Type": "application/merge-patch+json"}
    response = api.patch(f"{ITEMS}/{fid}", content=b'{"properties": {"address": null, "name": "\xe4\xb9\x99"}}',
                         headers=headers)
    assert response.status_code == 200, response.text
    row = stored(engine, fid)
    assert (row.name, row.address, row.key_unit, row.version) == ("乙", None, True, 2)
    before = len(changes(engine))
    same = api.patch(f"{ITEMS}/{fid}", json={"properties": {"name": "乙"}}, headers=headers)
    assert same.status_code == 200 and same.headers["etag"] == etag_of(LAYER, fid, 2)
    assert len(changes(engine)) == before  # nothing changed, nothing recorded
    moved = api.patch(f"{ITEMS}/{fid}", json={"geometry": {"type": "Point", "coordinates": [120.97, 32.07]}},
                      headers=headers)
    assert moved.headers["etag"] == etag_of(LAYER, fid, 3)
    assert bytes(stored(engine, fid).wkb) == shapely.to_wkb(Point(120.97, 32.07))
    assert stored(engine, fid).name == "乙"


def test_stale_if_match_is_412_and_changes_nothing(api, keys, engine):
    fid = create(api, keys, 4).json()["id"]
    api.patch(f"{ITEMS}/{fid}", json={"properties": {"name": "第二版"}}, headers=bearer(keys["ecology"]))
    before, log = snapshot(engine), changes(engine)
    stale = bearer(keys["ecology"]) | {"If-Match": etag_of(LAYER, fid, 1)}
    for response in (api.patch(f"{ITEMS}/{fid}", json={"properties": {"name": "x"}}, headers=stale),
                     api.put(f"{ITEMS}/{fid}", json=source_feature(4, 120.91, 32.06), headers=stale),
                     api.delete(f"{ITEMS}/{fid}", headers=stale),
                     api.post(f"{ITEMS}/{fid}/revert", params={"to_version": 1}, headers=stale)):
        assert response.status_code == 412, response.text
        assert response.json()["code"] == "precondition_failed"
        assert response.headers["etag"] == etag_of(LAYER, fid, 2)
    assert snapshot(engine) == before and changes(engine) == log
    other = bearer(keys["ecology"]) | {"If-Match": etag_of(LAYER, fid + 1, 2)}  # another feature's tag
    assert api.patch(f"{ITEMS}/{fid}", json={"properties": {"name": "x"}}, headers=other).status_code == 412
    weak = bearer(keys["ecology"]) | {"If-Match": "W/" + etag_of(LAYER, fid, 2)}
    assert api.patch(f"{ITEMS}/{fid}", json={"properties": {"name": "x"}}, headers=weak).status_code == 200


@pytest.mark.parametrize("second", ["patch", "delete"])
def test_two_editors_with_one_etag_exactly_one_wins(api, keys, engine, second):
    for round_ in range(4):
        fid = create(api, keys, 100 + round_ * 2 + (second == "delete")).json()["id"]
        tag = etag_of(LAYER, fid, 1)
        barrier, statuses = threading.Barrier(2), []

        def edit(kind: str, name: str):
            with httpx.Client(base_url=str(api.base_url), timeout=30) as client:
                headers = bearer(keys["ecology"]) | {"If-Match": tag}
                barrier.wait()
                if kind == "delete":
                    statuses.append(client.delete(f"{ITEMS}/{fid}", headers=headers).status_code)
                else:
                    statuses.append(client.patch(f"{ITEMS}/{fid}", json={"properties": {"name": name}},
                                                 headers=headers).status_code)

        threads = [threading.Thread(target=edit, args=("patch", "甲方")),
                   threading.Thread(target=edit, args=(second, "乙方"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(statuses) == 2 and statuses.count(412) == 1, statuses
        assert {200, 204} & set(statuses), statuses
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT operation, version FROM twin.change WHERE layer = :l AND fid = :f "
                                         "ORDER BY change_id"), {"l": LAYER, "f": fid}).all()
        assert len(versions) == 2 and versions[0] == ("insert", 1) and versions[1][1] == 2  # one write, no lost update


def test_delete_then_revert_brings_the_feature_back(api, keys, engine):
    fid = create(api, keys, 5, address="原址").json()["id"]
    original = snapshot(engine)[fid]
    api.patch(f"{ITEMS}/{fid}", json={"properties": {"address": "新址"}}, headers=bearer(keys["ecology"]))
    assert api.delete(f"{ITEMS}/{fid}", headers=bearer(keys["ecology"])).status_code == 204
    assert api.delete(f"{ITEMS}/{fid}", headers=bearer(keys["ecology"])).status_code == 404
    assert fid not in snapshot(engine)
    missing = api.post(f"{ITEMS}/{fid}/revert", params={"to_version": 3}, headers=bearer(keys["ecology"]))
    assert missing.status_code == 404 and "versions: 1, 2" in missing.json()["description"]
    back = api.post(f"{ITEMS}/{fid}/revert", params={"to_version": 1}, headers=bearer(keys["ecology"]))
    assert back.status_code == 201, back.text
    assert back.headers["etag"] == etag_of(LAYER, fid, 4)  # 1 insert, 2 update, 3 delete, 4 restored
    assert snapshot(engine)[fid] == original
    again = api.post(f"{ITEMS}/{fid}/revert", params={"to_version": 2}, headers=bearer(keys["ecology"]))
    assert again.status_code == 200 and again.json()["properties"]["address"] == "新址"
    assert [c[2:4] for c in changes(engine) if c[1] == fid] == [("insert", 1), ("update", 2), ("delete", 3),
                                                                ("insert", 4), ("update", 5)]


@pytest.mark.parametrize("n, who, status, code", [(20, None, 401, "missing_key"), (21, "urban", 403, "forbidden_layer"),
                                                  (22, "revoked", 401, "invalid_key"),
                                                  (23, "twin_nope_x", 401, "invalid_key"),
                                                  (24, "garbage", 401, "invalid_key")])
def test_writes_need_the_owning_department_key(api, keys, engine, n, who, status, code):
    fid = create(api, keys, n).json()["id"]
    before, log = snapshot(engine), changes(engine)
    headers = {} if who is None else bearer(keys.get(who, who))
    for response in (api.post(ITEMS, json=source_feature(99, 120.92, 32.09), headers=headers),
                     api.put(f"{ITEMS}/{fid}", json=source_feature(98, 120.92, 32.09), headers=headers),
                     api.patch(f"{ITEMS}/{fid}", json={"properties": {"name": "x"}}, headers=headers),
                     api.delete(f"{ITEMS}/{fid}", headers=headers),
                     api.post(f"{ITEMS}/{fid}/revert", params={"to_version": 1}, headers=headers)):
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
    assert snapshot(engine) == before and changes(engine) == log


BAD_BODIES = [
    (b'{"type": "Feature", "geometry": ', 400, "invalid_json", "body"),
    (b"", 400, "invalid_json", "body"),
    (b"[1, 2]", 400, "invalid_feature", "body.type"),
    (b'{"type": "FeatureCollection", "features": []}', 400, "invalid_feature", "body.type"),
    (b'{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 1]}, "properties": {}}', 400,
     "invalid_json", "body"),
    (b'{"type": "Feature", "geometry": {"type": "Point", "coordinates": "120,32"}, "properties": {}}', 400,
     "invalid_geometry", "geometry.coordinates"),
    (b'{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[120.9, 32.1]]}, "properties": {}}',
     400, "invalid_geometry", "geometry"),
    (b'{"type": "Feature", "geometry": {"type": "Circle", "coordinates": [120.9, 32.1]}, "properties": {}}', 422,
     "wrong_geometry_type", "geometry.type"),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_json", "body"),
]


@pytest.mark.parametrize("body, status, code, where", BAD_BODIES)
def test_malformed_bodies_are_400_with_the_reason(api, keys, engine, body, status, code, where):
    before = changes(engine)
    response = api.post(ITEMS, content=body, headers=bearer(keys["ecology"]) | {"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["where"] == where
    assert changes(engine) == before


def _with(n: int, geometry=None, **props) -> dict:
    feature = source_feature(n, 120.94, 32.08)
    if geometry is not None:
        feature["geometry"] = geometry
    feature["properties"] |= props
    return feature


INVALID_FEATURES = [
    (_with(50, {"type": "LineString", "coordinates": [[120.9, 32.1], [120.91, 32.1]]}), "geometry",
     "geometry is a LineString"),
    (_with(51, credit_code="91320214000000051X"), "properties.credit_code", "校验位"),
    (_with(52, credit_code="not a code"), "properties.credit_code", "18"),
    (_with(53, permit_class="随便管理"), "properties.permit_class", "is not one of"),
    (_with(54, name="  "), "properties.name", "required"),
    (_with(55, key_unit="maybe"), "properties.key_unit", "boolean"),
    (_with(56, industry_code="Z9999"), "properties.industry_code", "行业代码"),
    (_with(57, {"type": "Point", "coordinates": [32.1, 120.9]}), "geometry", "axes look swapped"),
    (_with(58, {"type": "Point", "coordinates": [500000.0, 3500000.0]}), "geometry", "projected metres"),
    (_with(59) | {"geometry": None}, "geometry", "missing or empty"),
    (_with(60, colour="red"), "properties.colour", "has no field"),
    (_with(61, name={"nested": 1}), "properties.name", "string, number, boolean or null"),
    (_with(62, name="a\x00b"), "properties.name", "NUL"),
    (_with(63, address="长" * 10_001), "properties.address", "longer than"),
]


@pytest.mark.parametrize("feature, where, reason", INVALID_FEATURES)
def test_invalid_features_are_422_with_the_validators_reason(api, keys, engine, feature, where, reason):
    before = changes(engine)
    response = api.post(ITEMS, json=feature, headers=bearer(keys["ecology"]))
    assert response.status_code == 422, response.text
    assert response.json()["where"] == where and reason in response.json()["description"]
    assert changes(engine) == before


def test_other_bad_requests(api, keys, engine):
    key = bearer(keys["ecology"])
    fid = create(api, keys, 8).json()["id"]
    before = changes(engine)
    duplicate = api.post(ITEMS, json=source_feature(8, 120.91, 32.11), headers=key)
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "key_taken"
    assert api.post(ITEMS, json=source_feature(9, 120.91, 32.11), params={"crs": "EPSG:999999"},
                    headers=key).json()["code"] == "unsupported_crs"
    assert api.post(ITEMS, json=source_feature(9, 120.91, 32.11), headers=key | {"Content-Crs": "<urn:nonsense>"}
                    ).status_code == 400
    assert api.post("/collections/nowhere/items", json=source_feature(9, 120.9, 32.1), headers=key).status_code == 404
    assert api.post("/collections/imagery/items", json=source_feature(9, 120.9, 32.1),
                    headers=key).json()["code"] == "not_a_feature_layer"
    assert api.patch(f"{ITEMS}/abc", json={}, headers=key).status_code == 400
    assert api.patch(f"{ITEMS}/{2**70}", json={}, headers=key).status_code == 400
    assert api.patch(f"{ITEMS}/999999", json={"properties": {"name": "x"}}, headers=key).status_code == 404
    assert api.patch(f"{ITEMS}/{fid}", json={"id": fid + 1}, headers=key).json()["code"] == "id_mismatch"
    assert api.patch(f"{ITEMS}/{fid}", json={"properties": None}, headers=key).json()["code"] == "invalid_patch"
    assert api.patch(f"{ITEMS}/{fid}", json={"geometry": None}, headers=key).status_code == 422
    assert api.post(f"{ITEMS}/{fid}/revert", params={"to_version": 0}, headers=key).status_code == 400
    assert api.post(f"{ITEMS}/{fid}/revert", headers=key).status_code == 400
    huge = b'{"type": "Feature", "properties": {"name": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    assert api.post(ITEMS, content=huge, headers=key | {"Content-Type": "application/json"}).status_code == 413
    assert changes(engine) == before


def test_z_is_dropped_and_hostile_text_is_stored_verbatim(api, keys, engine):
    name = "'); DROP TABLE layers.pollution_sources; -- 测试 %s {}"
    response = api.post(ITEMS, json=_with(70, {"type": "Point", "coordinates": [120.95, 32.11, 12.5]}, name=name),
                        headers=bearer(keys["ecology"]))
    assert response.status_code == 201, response.text
    row = stored(engine, response.json()["id"])
    assert row.name == name and bytes(row.wkb) == shapely.to_wkb(Point(120.95, 32.11))
