"""The departments' layers of issue 23, shipped as specs and loaded from the bundled sample through the generic ETL:
radiation points with dose-rate Datastreams, drinking-water source protection zones (which sources lie inside),
green spaces (green land per street), river chiefs with their phones private, cameras with GB/T 28181 ids and their
streams private (the three nearest to a case). Real server, real PostGIS; answers checked against shapely/pyproj."""

import json
import re
from datetime import datetime, timezone

import mapbox_vector_tile
import morecantile
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from shapely.geometry import shape
from sqlalchemy import text

from layers.catalog import get_layer
from layers.codes import camera_id
from tests.case_support import fresh, places, report
from tests.case_support import key as role_key
from tests.sta_support import bearer, get
from twin.auth import create_key

LAYERS = {"radiation_points": "生态环境局", "water_source_zones": "生态环境局", "green_spaces": "住房和城乡建设局",
          "river_chiefs": "水利局", "river_chief_contacts": "水利局", "cameras": "城市管理局",
          "camera_streams": "城市管理局"}
PRIVATE = {"river_chief_contacts", "camera_streams"}
GEOD = pyproj.Geod(ellps="GRS80")  # CGCS2000's ellipsoid
METRIC = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4549", always_xy=True)  # CGCS2000 GK zone 40, 120E
PHONE = re.compile(r"1[3-9]\d{9}|0510-\d{8}")
TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def keys(engine, loaded):
    with engine.begin() as conn:
        return {department: create_key(conn, department, []) for department in set(LAYERS.values())} | {
            "admin": create_key(conn, "管理员", [], is_admin=True)}


def items(http, layer: str, key: str | None = None, **params) -> list[dict]:
    response = http.get(f"/collections/{layer}/items", params={"limit": 10000, **params}, headers=bearer(key) if key
                        else {})
    assert response.status_code == 200, response.text
    return response.json()["features"]


def metres(geometry) -> shapely.Geometry:
    return shapely.transform(shape(geometry), lambda xy: np.column_stack(METRIC.transform(xy[:, 0], xy[:, 1])))


# --- the catalog and the load ------------------------------------------------------------------------------


def test_each_layer_is_shipped_and_loaded_from_the_sample_without_a_reject(loaded, engine):
    runs = {layer: result for _, layer, result in loaded}
    with engine.connect() as conn:
        for layer, department in LAYERS.items():
            spec = get_layer(layer)
            assert spec.department == department and spec.private == (layer in PRIVATE), layer
            result = runs[layer]
            assert result.status == "succeeded" and not result.ignored, (layer, result)
            assert result.counts.get("quarantined", 0) == 0, (layer, result.counts)
            outside = conn.execute(text(
                f"SELECT count(*) FROM layers.{layer} l, layers.districts d WHERE d.code = '320214' "
                "AND NOT ST_DWithin(l.geom::geography, d.geom::geography, 50)")).scalar()
            stored = conn.execute(text(f"SELECT count(*) FROM layers.{layer}")).scalar()
            assert stored > 0 and outside == 0, (layer, stored, outside)


def test_companions_match_their_public_layers_feature_for_feature(engine):
    with engine.connect() as conn:
        chiefs = set(conn.execute(text("SELECT DISTINCT chief_code FROM layers.river_chiefs")).scalars())
        contacts = set(conn.execute(text("SELECT chief_code FROM layers.river_chief_contacts")).scalars())
        unmatched = conn.execute(text(
            "SELECT count(*) FROM layers.cameras c FULL JOIN layers.camera_streams s USING (device_id) "
            "WHERE c.fid IS NULL OR s.fid IS NULL OR NOT ST_Equals(c.geom, s.geom)")).scalar()
    assert chiefs == contacts and unmatched == 0


@pytest.mark.parametrize("value, reason", [
    ("32021400001320000001", None), ("32021400081316000200", None),
    ("3202140000132000001", "20位"), ("3202140000132000000A", "20位"), (32021400001320000001, "字符串"),
    ("92021400001320000001", "行政区划"), ("32021400002000000001", "类型编码 200"),
    ("32021400001329000001", "网络标识 9")])
def test_camera_ids_are_checked_as_gb28181(value, reason):
    found = camera_id(value)
    assert (found is None) if reason is None else (reason in found), found


def test_a_camera_file_with_bad_device_ids_is_quarantined_with_reasons(engine, tmp_path):
    from etl.run import run_file

    path = tmp_path / "cameras.csv"
    path.write_text("国标编码,设备名称,状态,经度,纬度\n3202140000132000000,短了,在线,120.45,31.50\n"
                    "32021400002000000009,不是摄像机,在线,120.45,31.50\n", "utf-8")
    result = run_file(engine, "cameras", path, actor="test")
    assert result.status == "succeeded" and result.counts["quarantined"] == 2, result
    with engine.connect() as conn:
        reasons = conn.execute(text("SELECT reason FROM twin.quarantine WHERE run_id = :r ORDER BY row_number"),
                               {"r": result.run_id}).scalars().all()
    assert "20位" in reasons[0] and "类型编码 200" in reasons[1]


# --- radiation: the dose rate as SensorThings ----------------------------------------------------------------


@pytest.fixture(scope="module")
def radiation_things(engine, loaded):
    from sensing import radiation

    with engine.begin() as conn:
        radiation.refresh(conn)
        radiation.refresh(conn)  # idempotent
        return conn.execute(text("SELECT count(*) FROM layers.radiation_points")).scalar()


def test_every_radiation_point_is_a_thing_with_a_dose_rate_datastream(http, radiation_things):
    found = get(http, "Things", **{"$filter": "properties/layer eq 'radiation_points'", "$count": "true",
                                   "$expand": "Datastreams,Locations", "$top": "1000"})
    assert found["@iot.count"] == radiation_things == len(found["value"])
    for thing in found["value"]:
        assert [d["unitOfMeasurement"]["symbol"] for d in thing["Datastreams"]] == ["nGy/h"], thing["name"]
    station = next(t for t in found["value"] if t["properties"]["point_type"] == "自动站")
    feature = items(http, "radiation_points", filter=f"code = '{station['properties']['point_code']}'")[0]
    assert station["name"] == feature["properties"]["name"]
    assert station["Locations"][0]["location"]["coordinates"] == pytest.approx(feature["geometry"]["coordinates"])


def test_a_dose_rate_reading_is_stored_by_its_department_only(http, keys, radiation_things):
    thing = get(http, "Things", **{"$filter": "properties/point_code eq 'XWFS-001'", "$expand": "Datastreams"})
    stream = thing["value"][0]["Datastreams"][0]["@iot.id"]
    url = f"/sta/v1.1/Datastreams({stream})/Observations"
    reading = {"phenomenonTime": datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc).isoformat(), "result": 86.4}
    assert http.post(url, json=reading).status_code == 401
    refused = http.post(url, json=reading, headers=bearer(keys["城市管理局"]))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden_department"
    assert http.post(url, json=reading, headers=bearer(keys["生态环境局"])).status_code == 201
    assert http.post(url, json=reading | {"result": "high"}, headers=bearer(keys["生态环境局"])).status_code == 400
    assert [o["result"] for o in get(http, url.removeprefix("/sta/v1.1/"))["value"]] == [86.4]


# --- water sources: which pollution sources lie inside a protection zone --------------------------------------


def test_sources_inside_a_protection_zone_by_within_and_by_intersects(http):
    zones = {z["properties"]["level"]: z for z in items(http, "water_source_zones")}
    assert set(zones) == {"一级保护区", "二级保护区", "准保护区"}
    sources = items(http, "pollution_sources")
    for level in ("二级保护区", "准保护区"):
        area = shape(zones[level]["geometry"])
        expected = sorted(s["properties"]["credit_code"] for s in sources if area.intersects(shape(s["geometry"])))
        inside = http.post("/query/within", json={"layer": "pollution_sources", "distance": 0, "geometries": False,
                                                  "of": {"layer": "water_source_zones", "where": {"level": level}}})
        assert inside.status_code == 200, inside.text
        assert sorted(f["properties"]["credit_code"] for f in inside.json()["features"]) == expected, level
        counted = http.post("/query/intersects", json={"layers": ["pollution_sources"], "features": False,
                                                       "geometry": zones[level]["geometry"]})
        assert counted.status_code == 200, counted.text
        assert counted.json()["summary"]["pollution_sources"]["count"] == len(expected)
    assert expected, "the sample's 准保护区 reaches the 新安 industrial area"


def test_protection_zone_queries_refuse_bad_input(http):
    cases = [({"layer": "pollution_sources", "distance": 0, "of": {"layer": "water_source_zones",
                                                                    "where": {"level": "三级保护区"}}}, "empty_selection"),
             ({"layer": "pollution_sources", "distance": 0, "of": {"layer": "water_source_zones",
                                                                    "where": {"grade": "一级保护区"}}}, None),
             ({"layer": "pollution_sources", "distance": -1, "of": {"layer": "water_source_zones"}}, None)]
    for body, code in cases:
        refused = http.post("/query/within", json=body)
        assert refused.status_code in (400, 422) and refused.json()["where"], (body, refused.text)
        assert code is None or refused.json()["code"] == code


# --- green spaces: green land per street ---------------------------------------------------------------------


def test_green_land_per_street_by_aggregate(http):
    answer = http.post("/query/aggregate", json={"layer": "green_spaces", "by": "streets", "sum": "area_m2"})
    assert answer.status_code == 200, answer.text
    streets = answer.json()["features"]
    assert len(streets) == 6
    spaces = pd.DataFrame([f["properties"] for f in items(http, "green_spaces", properties="street_code,area_m2")])
    expected = spaces.groupby("street_code")["area_m2"].agg(["count", "sum"])
    for street in streets:
        p = street["properties"]
        assert (p["count"], p["sum"]) == pytest.approx(tuple(expected.loc[p["code"]])), p["name"]
        share = p["sum"] / metres(street["geometry"]).area
        assert 0 < share < 0.2, (p["name"], share)
    for f in items(http, "green_spaces", limit=20):
        assert f["properties"]["area_m2"] == pytest.approx(metres(f["geometry"]).area, rel=2e-3)
    by_class = http.post("/query/aggregate", json={"layer": "green_spaces", "by": "streets", "sum": "area_m2",
                                                   "group_by": "green_class", "geometries": False}).json()
    assert {"G11", "G12", "G14", "XG"} <= set(by_class["groups"])
    refused = http.post("/query/aggregate", json={"layer": "green_spaces", "by": "streets", "sum": "class_name"})
    assert refused.status_code == 422 and refused.json()["where"] == "body.sum"


# --- river chiefs and cameras: what is private stays private -------------------------------------------------


def tile_with(http, layer: str, key: str | None = None, z: int = 14) -> dict:
    feature = items(http, layer, key, limit=1)[0]
    x, y = shapely.get_coordinates(shapely.point_on_surface(shape(feature["geometry"])))[0]
    tile = TMS.tile(x, y, z)
    answer = http.get(f"/collections/{layer}/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}", headers=bearer(key)
                      if key else {})
    assert answer.status_code == 200, answer.text
    return mapbox_vector_tile.decode(answer.content)


@pytest.mark.parametrize("layer, public", [("river_chief_contacts", "river_chiefs"), ("camera_streams", "cameras")])
def test_the_private_companion_refuses_readers_without_its_departments_key(http, keys, layer, public):
    owner = LAYERS[layer]
    fid = items(http, layer, keys[owner], limit=1)[0]["id"]
    base = f"/collections/{layer}"
    for path in (base, f"{base}/items", f"{base}/items/{fid}", f"{base}/items/{fid}/history", f"{base}/export?f=csv",
                 f"{base}/changes", f"{base}/tiles/WebMercatorQuad/tilejson.json", f"/changes?layer={layer}"):
        anonymous = http.get(path)
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "private_layer", (path, anonymous.text)
        other = next(k for d, k in keys.items() if d not in (owner, "admin"))
        assert http.get(path, headers=bearer(other)).status_code == 403, path
        assert http.get(path, headers=bearer(keys[owner])).status_code == 200, path
    assert layer not in {c["id"] for c in http.get("/collections").json()["collections"]}
    assert http.post("/query/nearest", json={"point": [120.45, 31.5], "layers": [layer]}).status_code == 401
    assert layer in tile_with(http, layer, keys[owner])
    assert public in tile_with(http, public)


def public_feed_around(http, keys, *layers: str) -> str:
    """The global change feed, read without a key, from just before the first change of any of the layers."""
    first = [http.get("/changes", params={"layer": layer, "limit": 1}, headers=bearer(keys["admin"])).json()
             ["changes"][0]["id"] for layer in layers]
    return http.get("/changes", params={"after": min(first) - 1, "limit": 10000}).text


def test_no_phone_is_anywhere_in_the_public_river_chiefs(http, keys):
    contacts = [f["properties"] for f in items(http, "river_chief_contacts", keys["水利局"])]
    assert len(contacts) > 10 and all(PHONE.fullmatch(c["duty_phone"]) for c in contacts)
    phones = {c["duty_phone"] for c in contacts} | {c["office_phone"] for c in contacts}
    chiefs = items(http, "river_chiefs")
    assert {f["properties"]["level"] for f in chiefs} == {"区级", "街道级", "村级"}
    feed = public_feed_around(http, keys, "river_chiefs", "river_chief_contacts")
    served = [http.get("/collections/river_chiefs/items", params={"limit": 10000}).text,
              http.get("/collections/river_chiefs/export", params={"f": "csv"}).text,
              http.get(f"/collections/river_chiefs/items/{chiefs[0]['id']}/history").text,
              http.get("/collections/river_chiefs/changes", params={"limit": 10000}).text,
              feed, str(tile_with(http, "river_chiefs"))]
    for body in served:
        assert not any(phone in body for phone in phones)
    assert "river_chief_contacts" not in feed and '"river_chiefs"' in feed


def streamed(http, keys, key: str | None) -> list[dict]:
    """The change events of river_chiefs, river_chief_contacts and cameras as /stream replays them (stored in that
    order by the bundle), read until the first camera's: every contact's change is behind it."""
    first = http.get("/changes", params={"layer": "river_chiefs", "limit": 1}, headers=bearer(keys["admin"]))
    params = {"topics": "changes", "layers": "river_chiefs,river_chief_contacts,cameras",
              "after": first.json()["changes"][0]["id"] - 1}
    events = []
    with http.stream("GET", "/stream", params=params, headers=bearer(key) if key else {}) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
                if events[-1]["layer"] == "cameras":
                    return events
    raise AssertionError("the stream ended before the cameras' changes")


def test_the_event_stream_carries_no_phone_to_others(http, keys):
    contacts = items(http, "river_chief_contacts", keys["水利局"])
    phones = {f["properties"]["duty_phone"] for f in contacts}
    anonymous = streamed(http, keys, None)
    assert {e["layer"] for e in anonymous} == {"river_chiefs", "cameras"}
    assert not any(phone in json.dumps(e, ensure_ascii=False) for e in anonymous for phone in phones)
    owner = [e for e in streamed(http, keys, keys["水利局"]) if e["layer"] == "river_chief_contacts"]
    assert len(owner) == len(contacts)


def test_no_stream_url_is_anywhere_in_the_public_cameras(http, keys):
    urls = {f["properties"]["stream_url"] for f in items(http, "camera_streams", keys["城市管理局"])}
    assert urls and all(u.startswith("rtsp://") for u in urls)
    feed = public_feed_around(http, keys, "cameras", "camera_streams")
    served = [http.get("/collections/cameras/items", params={"limit": 10000}).text,
              http.get("/collections/cameras/export", params={"f": "csv"}).text, feed, str(tile_with(http, "cameras"))]
    for body in served:
        assert "rtsp://" not in body and "camera_streams" not in body
    assert '"cameras"' in feed


def test_the_three_cameras_nearest_to_a_case(http, engine):
    supervisor = role_key(engine, "城市管理局", "supervisor")
    created = report(http, fresh(places(engine)[0]), headers=supervisor)
    assert created.status_code == 201, created.text
    case = items(http, "cases", filter=f"case_no = '{created.json()['case_no']}'")[0]
    lon, lat = case["geometry"]["coordinates"]
    answer = http.post("/query/nearest", json={"point": case["geometry"], "layers": ["cameras"], "k": 3})
    assert answer.status_code == 200, answer.text
    nearest = answer.json()["features"]
    cameras = items(http, "cameras", properties="device_id")
    xs, ys = zip(*(c["geometry"]["coordinates"] for c in cameras))
    _, _, distances = GEOD.inv([lon] * len(xs), [lat] * len(ys), xs, ys)
    ranked = sorted(zip(distances, (c["properties"]["device_id"] for c in cameras)))[:3]
    assert [f["properties"]["device_id"] for f in nearest] == [device for _, device in ranked]
    assert [f["properties"]["distance_m"] for f in nearest] == pytest.approx([d for d, _ in ranked], abs=0.01)
    for body in ({"point": case["geometry"], "layers": ["cameras"], "k": 0},
                 {"point": case["geometry"], "layers": ["camera"], "k": 3},
                 {"point": [lon, 95.0], "layers": ["cameras"], "k": 3}):
        refused = http.post("/query/nearest", json=body)
        assert refused.status_code in (400, 422) and refused.json()["where"], (body, refused.text)
