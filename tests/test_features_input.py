"""Bad, hostile, huge and empty input to the features API: always a JSON 4xx saying what and where."""

import json

import pytest
from sqlalchemy import text

ITEMS = "/collections/city_components/items"
INJECTION = "status; DROP TABLE layers.city_components; --"

CASES = [
    # (path, params, status, code, words the description must contain)
    ("/collections/nope/items", {}, 404, "unknown_layer", ["nope"]),
    ("/collections/imagery/items", {}, 404, "not_a_feature_layer", ["raster"]),
    (ITEMS, {"filter": "colour = 'red'"}, 400, "unknown_field", ["colour", "Queryables:", "status", "geometry"]),
    (ITEMS, {"filter": "S_INTERSECTS(geometry, POINT(1 2))"}, 200, None, []),
    ("/collections/water_quality/items", {"filter": "S_INTERSECTS(geometry, POINT(1 2))"}, 400, "unknown_field",
     ["geometry", "observed_at"]),
    ("/collections/water_quality/items", {"bbox": "120,31,121,32"}, 400, "invalid_parameter", ["no geometry"]),
    (ITEMS, {"crs": "EPSG:9999"}, 400, "unsupported_crs", ["EPSG:9999", "CRS84"]),
    (ITEMS, {"crs": "http://www.opengis.net/def/crs/EPSG/0/2385"}, 400, "unsupported_crs", ["4549"]),
    (ITEMS, {"bbox": "120,31,121,32", "bbox-crs": "EPSG:0"}, 400, "unsupported_crs", []),
    (ITEMS, {"filter": "status = 'x'", "filter-crs": "nonsense"}, 400, "unsupported_crs", []),
    (ITEMS, {"bbox": "a,b,c,d"}, 400, "invalid_parameter", ["bbox"]),
    (ITEMS, {"bbox": "1,2,3"}, 400, "invalid_parameter", ["4 (or 6)"]),
    (ITEMS, {"bbox": "1,2,3,4,5"}, 400, "invalid_parameter", []),
    (ITEMS, {"bbox": "121,31,120,32"}, 400, "invalid_parameter", ["minimum"]),
    (ITEMS, {"bbox": "nan,31,120,32"}, 400, "invalid_parameter", []),
    (ITEMS, {"bbox": "120,31,121,32", "bbox-crs": "EPSG:4326"}, 400, "invalid_parameter", ["axis order"]),
    (ITEMS, {"bbox": ",".join(["1"] * 10_000)}, 400, "invalid_parameter", []),
    (ITEMS, {"datetime": "yesterday"}, 400, "invalid_parameter", ["RFC 3339"]),
    (ITEMS, {"datetime": "2020-13-01"}, 400, "invalid_parameter", []),
    (ITEMS, {"datetime": "2020-01-01/garbage"}, 400, "invalid_parameter", ["garbage"]),
    (ITEMS, {"datetime": "../.."}, 400, "invalid_parameter", ["one end"]),
    (ITEMS, {"datetime": "2021-01-01/2020-01-01"}, 400, "invalid_parameter", ["ends before"]),
    (ITEMS, {"as_of": "last tuesday"}, 400, "invalid_parameter", []),
    (ITEMS, {"as_of": "2020-01-01"}, 400, "invalid_parameter", ["date-time"]),
    (ITEMS, {"limit": "0"}, 400, "invalid_parameter", ["limit"]),
    (ITEMS, {"limit": "abc"}, 400, "invalid_parameter", ["limit"]),
    (ITEMS, {"offset": "-1"}, 400, "invalid_parameter", ["offset"]),
    (ITEMS, {"offset": str(10**30)}, 400, "invalid_parameter", ["offset"]),
    (ITEMS, {"limit": str(10**30)}, 200, None, []),
    (ITEMS, {"properties": "code,colour"}, 400, "unknown_field", ["colour", "Known:"]),
    (ITEMS, {"properties": INJECTION}, 400, "unknown_field", []),
    (ITEMS, {"properties": ",".join(["code"] * 1000)}, 400, "invalid_parameter", []),
    (ITEMS, {"sortby": INJECTION}, 400, "unknown_field", ["Sortable"]),
    (ITEMS, {"sortby": "-colour"}, 400, "unknown_field", ["colour"]),
    (ITEMS, {"filter": "status = 'x'; DROP TABLE layers.city_components; --"}, 400, "invalid_filter", ["position 13"]),
    (ITEMS, {"filter": "status = 'x' OR 1=1 --"}, 400, "invalid_filter", []),
    (ITEMS, {"filter": "status = 'x'' OR ''1''=''1'"}, 400, "invalid_filter", ["position"]),
    (ITEMS, {"filter": "\"status\" = 'x\"; DROP TABLE layers.city_components; --'"}, 200, None, []),
    (ITEMS, {"filter": "status = "}, 400, "invalid_filter", ["ends too early"]),
    (ITEMS, {"filter": "status = 'x' AND )"}, 400, "invalid_filter", ["')'", "position 18"]),
    (ITEMS, {"filter": "stat$us = 1"}, 400, "invalid_filter", ["'$'", "position 5"]),
    (ITEMS, {"filter": ""}, 400, "invalid_filter", ["empty"]),
    (ITEMS, {"filter": "status = '" + "x" * 60_000 + "'"}, 400, "invalid_filter", ["longer"]),
    (ITEMS, {"filter": "status > 5"}, 400, "invalid_filter", ["'status' (string)", "number"]),
    (ITEMS, {"filter": "installed_on = 'abc'"}, 400, "invalid_filter", ["installed_on"]),
    (ITEMS, {"filter": "S_INTERSECTS(status, POINT(1 2))"}, 400, "invalid_filter", ["geometries"]),
    (ITEMS, {"filter": "installed_on > TIMESTAMP('2020-01-01T00:00:00')"}, 400, "invalid_filter", ["offset"]),
    (ITEMS, {"filter": "T_BEFORE(status, DATE('2020-01-01'))"}, 400, "invalid_filter", ["Temporal"]),
    (ITEMS, {"filter": "status = geometry"}, 400, "invalid_filter", ["spatial functions"]),
    (ITEMS, {"filter": "upper(status) = 'X'"}, 400, "invalid_filter", ["Unknown function"]),
    (ITEMS, {"filter": "installed_on + 1 > 2"}, 400, "invalid_filter", ["Arithmetic"]),
    (ITEMS, {"filter": "S_INTERSECTS(geometry, POLYGON((1 1, 2 2)))"}, 400, "invalid_filter", ["geometry"]),
    (ITEMS, {"filter": "S_DWITHIN(geometry, POINT(120 31), -5)"}, 400, "invalid_filter", ["distance"]),
    (ITEMS, {"filter": "RELATE(geometry, POINT(1 2), 'XYZ')"}, 400, "invalid_filter", ["DE-9IM"]),
    (ITEMS, {"filter": "status = 'x'", "filter-lang": "sql"}, 400, "invalid_parameter", ["cql2-text"]),
    (ITEMS, {"filter": "{", "filter-lang": "cql2-json"}, 400, "invalid_filter", ["not JSON", "position"]),
    (ITEMS, {"filter": '{"op": "=", "args": []}', "filter-lang": "cql2-json"}, 400, "invalid_filter", []),
    (ITEMS, {"filter": '{"op": "nope", "args": [1, 2]}', "filter-lang": "cql2-json"}, 400, "invalid_filter", []),
    (ITEMS, {"filter": '[]', "filter-lang": "cql2-json"}, 400, "invalid_filter", []),
    (ITEMS, {"filter": '42', "filter-lang": "cql2-json"}, 400, "invalid_filter", []),
    (ITEMS, {"filter": '{"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [1, 2]}]}',
             "filter-lang": "cql2-json"}, 400, "invalid_filter", ["bbox"]),
    (ITEMS, {"filter": json.dumps({"op": "=", "args": [{"property": INJECTION}, 1]}), "filter-lang": "cql2-json"},
     400, "unknown_field", ["DROP TABLE"]),
    (f"{ITEMS}/abc", {}, 404, "unknown_feature", ["abc"]),
    ("/collections/water_quality/series", {}, 400, "invalid_parameter", ["station"]),
    ("/collections/water_quality/series", {"station": "nope"}, 404, "unknown_station", ["nope"]),
    ("/collections/water_quality/series", {"station": "XW-001", "aggregate": "weekly"}, 400, "invalid_parameter",
     ["aggregate"]),
    ("/collections/water_quality/series", {"station": "XW-001", "datetime": "soon"}, 400, "invalid_parameter", []),
]


@pytest.mark.parametrize("path, params, status, code, words", CASES,
                         ids=[f"{p.split('/')[2]}-{json.dumps(q, ensure_ascii=False)[:60]}" for p, q, *_ in CASES])
def test_bad_input_is_a_clear_4xx(http, path, params, status, code, words):
    response = http.get(path, params=params)
    assert response.status_code == status, response.text[:500]
    if code:
        body = response.json()
        assert body["code"] == code
        for word in words:
            assert word in body["description"] or word in json.dumps(body, ensure_ascii=False), body


def test_deep_nesting_never_breaks_the_server(http):
    deep_text = "(" * 3000 + "status = 'x'" + ")" * 3000
    deep_json = '{"op":"not","args":[' * 700 + '{"op":"=","args":[{"property":"status"},"x"]}' + "]}" * 700
    for params in ({"filter": deep_text}, {"filter": deep_json, "filter-lang": "cql2-json"}):
        assert http.get(ITEMS, params=params).status_code in (200, 400)
    assert http.get("/health").status_code == 200


def test_hostile_input_changed_nothing(http, engine, loaded):
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM layers.city_components")).scalar()
    body = http.get(ITEMS, params={"filter": "status = 'x''; DROP TABLE layers.city_components; --'",
                                   "limit": 1}).json()
    assert body.get("numberMatched", 0) == 0
    body = http.get(ITEMS, params={"filter": "status LIKE '%'' OR 1=1 --%'", "limit": 1})
    assert body.status_code in (200, 400)
    assert http.get(ITEMS, params={"limit": 1}).json()["numberMatched"] == count
