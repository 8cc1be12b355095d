"""OGC API Features (Parts 1-3) over real HTTP: documents, paging, CRSs, bbox, datetime, properties,
sortby, CQL2 text and JSON, as_of, queryables and bad input. Expected values are computed here,
independently, from the rows read back from PostGIS with geopandas/pandas/pyproj/shapely."""

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from sqlalchemy import text

from layers.catalog import get_layer

ITEMS = "/collections/{}/items"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"
CST = ZoneInfo("Asia/Shanghai")
BOX = (120.35, 31.45, 120.45, 31.55)
POLYGON = "POLYGON((120.36 31.46, 120.44 31.47, 120.46 31.54, 120.38 31.56, 120.36 31.46))"
CENTRE = (120.40, 31.50)


def features(http, layer: str, **params) -> dict:
    response = http.get(ITEMS.format(layer), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def matched(http, layer: str, **params) -> int:
    """numberMatched; past TWIN_ITEMS_COUNT_LIMIT the server leaves it out and a client counts the pages."""
    first = features(http, layer, limit=1, properties="", **params)
    if "numberMatched" in first:
        return first["numberMatched"]
    count, url = 0, f"/collections/{layer}/items"
    query = {"limit": 10_000, "properties": "", **params}
    while url:
        page = http.get(url, params=query).json()
        count += page["numberReturned"]
        url, query = next((link["href"] for link in page["links"] if link["rel"] == "next"), None), None
    return count


def frame(engine, sql: str) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(sql, conn, geom_col="geom")


@pytest.fixture(scope="module")
def components(engine, loaded) -> gpd.GeoDataFrame:
    return frame(engine, "SELECT fid, code, status, class_name, owner_unit, installed_on, geom "
                         "FROM layers.city_components ORDER BY fid")


@pytest.fixture(scope="module")
def roads(engine, loaded) -> gpd.GeoDataFrame:
    return frame(engine, "SELECT fid, code, lanes, geom FROM layers.roads ORDER BY fid")


@pytest.fixture(scope="module")
def readings(engine, loaded) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql('SELECT fid, station_code, observed_at, status, "do", codmn FROM layers.water_quality', conn)


def test_feature_collection_document(http, components):
    response = http.get(ITEMS.format("city_components"), params={"limit": 5})
    assert response.headers["content-type"] == "application/geo+json"
    assert response.headers["content-crs"] == f"<{CRS84}>"
    body = response.json()
    assert body["type"] == "FeatureCollection"
    assert body["numberMatched"] == len(components) and body["numberReturned"] == 5
    assert abs(datetime.fromisoformat(body["timeStamp"]) - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert {link["rel"] for link in body["links"]} == {"self", "collection", "next"}
    expected = components.head(5)
    assert [f["id"] for f in body["features"]] == expected.fid.tolist()
    for feature, row in zip(body["features"], expected.itertuples()):
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Point"
        assert feature["geometry"]["coordinates"] == pytest.approx([row.geom.x, row.geom.y], abs=1e-8)
        assert list(feature["properties"]) == [f.name for f in get_layer("city_components").fields]
        props = feature["properties"]
        assert (props["code"], props["status"], props["installed_on"]) == (row.code, row.status,
                                                                            row.installed_on.isoformat())


def test_one_item_with_links_crs_and_properties(http, components):
    row = components.iloc[10]
    response = http.get(f"{ITEMS.format('city_components')}/{row.fid}",
                        params={"crs": "EPSG:4326", "properties": "code"})
    assert response.status_code == 200 and response.headers["content-crs"] == f"<{EPSG.format(4326)}>"
    body = response.json()
    assert body["id"] == row.fid and body["properties"] == {"code": row.code}
    assert body["geometry"]["coordinates"] == pytest.approx([row.geom.y, row.geom.x], abs=1e-8)  # lat, lon
    assert {link["rel"] for link in body["links"]} == {"self", "collection"}
    for fid in ("99999999", "abc", "1.5", "-1", "99999999999999999999999"):
        missing = http.get(f"{ITEMS.format('city_components')}/{fid}")
        assert missing.status_code == 404 and missing.json()["code"] == "unknown_feature"


def _walk(http, url: str, params: dict) -> list[dict]:
    pages = [http.get(url, params=params).json()]
    while next_link := next((link["href"] for link in pages[-1]["links"] if link["rel"] == "next"), None):
        pages.append(http.get(next_link).json())
    return pages


def test_paging_to_the_end(http, components):
    pages = _walk(http, ITEMS.format("city_components"), {"limit": 700, "properties": ""})
    ids = [f["id"] for page in pages for f in page["features"]]
    assert [p["numberReturned"] for p in pages] == [700, 700, 700, 700, 200]
    assert sum(p["numberReturned"] for p in pages) == pages[0]["numberMatched"] == len(components)
    assert len(set(ids)) == len(ids) and sorted(ids) == components.fid.tolist()
    assert all(any(link["rel"] == "prev" for link in p["links"]) for p in pages[1:])
    sorted_pages = _walk(http, ITEMS.format("city_components"), {"limit": 999, "sortby": "-installed_on"})
    got = [(f["properties"]["installed_on"], f["id"]) for page in sorted_pages for f in page["features"]]
    expected = components.assign(day=components.installed_on.astype(str)).sort_values(
        ["day", "fid"], ascending=[False, True])
    assert got == list(zip(expected.day, expected.fid))


def test_limit_default_clamp_and_openapi(http, readings):
    assert features(http, "city_components")["numberReturned"] == 100
    assert len(readings) > 10_000
    clamped = features(http, "water_quality", limit=50_000, properties="")
    assert clamped["numberReturned"] == 10_000
    # the whole layer, unfiltered: counted exactly however many readings lie past the page
    assert clamped["numberMatched"] == len(readings)
    next_link = next(link["href"] for link in clamped["links"] if link["rel"] == "next")
    assert "limit=10000" in next_link and "offset=10000" in next_link
    parameters = http.get("/api").json()["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]
    limit = next(p for p in parameters if p["name"] == "limit")["schema"]
    assert limit["default"] == 100 and limit["maximum"] == 10_000
    assert {"bbox", "bbox-crs", "crs", "datetime", "filter", "filter-lang", "filter-crs", "properties", "sortby",
            "as_of", "offset"} <= {p["name"] for p in parameters}


@pytest.mark.parametrize("asked, uri, target", [
    (None, CRS84, "OGC:CRS84"),
    ("OGC:CRS84", CRS84, "OGC:CRS84"),
    (EPSG.format(4326), EPSG.format(4326), "EPSG:4326"),
    ("EPSG:4490", EPSG.format(4490), "EPSG:4490"),
    (EPSG.format(4549), EPSG.format(4549), "EPSG:4549"),
    ("urn:ogc:def:crs:EPSG::3857", EPSG.format(3857), "EPSG:3857"),
])
def test_output_crs_with_authority_axis_order(http, components, roads, asked, uri, target):
    transformer = pyproj.Transformer.from_crs("EPSG:4490", target)  # authority axis order both ways
    point = components.iloc[0]
    params = {"crs": asked} if asked else {}
    response = http.get(f"{ITEMS.format('city_components')}/{point.fid}", params=params)
    assert response.headers["content-crs"] == f"<{uri}>"
    expected = transformer.transform(point.geom.y, point.geom.x)  # EPSG:4490 input is lat, lon
    tolerance = 1e-7 if pyproj.CRS(target).is_geographic else 2e-3
    assert response.json()["geometry"]["coordinates"] == pytest.approx(list(expected), abs=tolerance)
    first = expected[0]
    assert {"OGC:CRS84": 120 < first < 121, "EPSG:4326": 31 < first < 32, "EPSG:4490": 31 < first < 32,
            "EPSG:4549": 3.4e6 < first < 3.6e6, "EPSG:3857": 1.33e7 < first < 1.35e7}[target]
    road = roads.iloc[0]
    body = http.get(f"{ITEMS.format('roads')}/{road.fid}", params=params).json()
    got = np.array([xy for line in body["geometry"]["coordinates"] for xy in line])
    lonlat = shapely.get_coordinates(road.geom)
    want = np.column_stack(transformer.transform(lonlat[:, 1], lonlat[:, 0]))
    assert np.allclose(got, want, atol=tolerance, rtol=0)


def test_bbox_in_each_axis_order_and_crs(http, components, roads):
    box = shapely.box(*BOX)
    inside = int(components.intersects(box).sum())
    crossing = int(roads.intersects(box).sum())
    assert 0 < inside < len(components) and 0 < crossing < len(roads)
    lon_lat = ",".join(map(str, BOX))
    lat_lon = ",".join(map(str, (BOX[1], BOX[0], BOX[3], BOX[2])))
    assert matched(http, "city_components", bbox=lon_lat) == inside
    assert matched(http, "roads", bbox=lon_lat) == crossing
    assert matched(http, "city_components", bbox=lat_lon, **{"bbox-crs": EPSG.format(4326)}) == inside
    assert matched(http, "roads", bbox=lat_lon, **{"bbox-crs": "EPSG:4490"}) == crossing
    assert matched(http, "city_components", bbox=f"{BOX[0]},{BOX[1]},0,{BOX[2]},{BOX[3]},100") == inside
    x0, y0, x1, y1 = pyproj.Transformer.from_crs("OGC:CRS84", "EPSG:3857").transform_bounds(*BOX)
    assert matched(http, "city_components", bbox=f"{x0},{y0},{x1},{y1}", **{"bbox-crs": "EPSG:3857"}) == inside
    metric = components.to_crs(4549)  # geopandas keeps x = easting
    e0, n0, e1, n1 = 535_000, 3_484_000, 545_000, 3_492_000
    in_metric = int(((metric.geometry.x >= e0) & (metric.geometry.x <= e1) & (metric.geometry.y >= n0)
                     & (metric.geometry.y <= n1)).sum())
    assert in_metric > 0
    assert matched(http, "city_components", bbox=f"{n0},{e0},{n1},{e1}", **{"bbox-crs": "EPSG:4549"}) == in_metric


def test_datetime_instants_intervals_and_days(http, readings, components):
    times = readings.observed_at.sort_values().unique()
    t0, t1 = pd.Timestamp(times[5]), pd.Timestamp(times[40])
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    assert matched(http, "water_quality", datetime=iso(t0)) == int((readings.observed_at == t0).sum()) > 0
    between = (readings.observed_at >= t0) & (readings.observed_at <= t1)
    assert matched(http, "water_quality", datetime=f"{iso(t0)}/{iso(t1)}") == int(between.sum())
    assert matched(http, "water_quality", datetime=f"../{iso(t1)}") == int((readings.observed_at <= t1).sum())
    assert matched(http, "water_quality", datetime=f"{iso(t1)}/") == int((readings.observed_at >= t1).sum())
    day = (t1.tz_convert(CST) + pd.Timedelta(days=1)).date()
    start = pd.Timestamp(day.isoformat(), tz=CST)
    on_day = (readings.observed_at >= start) & (readings.observed_at < start + pd.Timedelta(days=1))
    assert matched(http, "water_quality", datetime=day.isoformat()) == int(on_day.sum()) > 0
    naive = t0.tz_convert(CST).tz_localize(None).isoformat()  # no offset: China Standard Time
    assert matched(http, "water_quality", datetime=naive) == int((readings.observed_at == t0).sum())
    installed = pd.to_datetime(components.installed_on)
    in_2015 = ((installed >= "2015-01-01") & (installed <= "2015-12-31")).sum()
    assert matched(http, "city_components", datetime="2015-01-01/2015-12-31") == int(in_2015)
    response = http.get(ITEMS.format("roads"), params={"datetime": "2020-01-01"})
    assert response.status_code == 400 and response.json()["where"] == "query.datetime"


def test_properties_and_sortby(http, components):
    body = features(http, "city_components", properties="code,status", limit=3)
    assert [list(f["properties"]) for f in body["features"]] == [["code", "status"]] * 3
    assert all(f["properties"] == {} for f in features(http, "city_components", properties="", limit=3)["features"])
    got = [f["id"] for f in features(http, "city_components", sortby="-installed_on,+code", limit=50)["features"]]
    expected = components.sort_values(["installed_on", "code"], ascending=[False, True]).fid.head(50).tolist()
    assert got == expected
    got = [f["id"] for f in features(http, "city_components", sortby="status", limit=80)["features"]]
    assert got == components.sort_values(["status", "fid"]).fid.head(80).tolist()


def _days(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column)


COMPARISONS = [
    ("status = '破损'", lambda d: d.status == "破损"),
    ("status <> '完好'", lambda d: d.status != "完好"),
    ("status IN ('破损', '丢失')", lambda d: d.status.isin(["破损", "丢失"])),
    ("status NOT IN ('完好')", lambda d: d.status != "完好"),
    ("code LIKE '32021401%'", lambda d: d.code.str.startswith("32021401")),
    ("code NOT LIKE '32021401%'", lambda d: ~d.code.str.startswith("32021401")),
    ("code LIKE '32021401__000001'", lambda d: d.code.str.fullmatch(r"32021401..000001")),
    ("installed_on BETWEEN DATE('2010-01-01') AND DATE('2012-12-31')",
     lambda d: _days(d.installed_on).between("2010-01-01", "2012-12-31")),
    ("installed_on >= DATE('2015-01-01') AND NOT (status = '完好')",
     lambda d: (_days(d.installed_on) >= "2015-01-01") & (d.status != "完好")),
    ("status = '破损' OR status = '丢失'", lambda d: d.status.isin(["破损", "丢失"])),
    ("NOT (status = '完好' OR installed_on < DATE('2012-01-01'))",
     lambda d: (d.status != "完好") & (_days(d.installed_on) >= "2012-01-01")),
    ("NOT (NOT (status = '破损'))", lambda d: d.status == "破损"),
    ("owner_unit IS NOT NULL", lambda d: d.owner_unit.notna()),
    ("CASEI(class_name) = casei('交通信号灯')", lambda d: d.class_name == "交通信号灯"),
    ("T_BEFORE(installed_on, DATE('2010-01-01'))", lambda d: _days(d.installed_on) < "2010-01-01"),
    ("T_AFTER(installed_on, DATE('2020-01-01'))", lambda d: _days(d.installed_on) > "2020-01-01"),
    ("T_DURING(installed_on, INTERVAL('2010-01-01', '2011-01-01'))",
     lambda d: (_days(d.installed_on) > "2010-01-01") & (_days(d.installed_on) < "2011-01-01")),
    ("T_INTERSECTS(installed_on, INTERVAL('2010-01-01', '2011-01-01'))",
     lambda d: _days(d.installed_on).between("2010-01-01", "2011-01-01")),
    ("T_INTERSECTS(installed_on, INTERVAL('..', '2010-06-30'))", lambda d: _days(d.installed_on) <= "2010-06-30"),
    ("T_DISJOINT(installed_on, INTERVAL('2010-01-01', '..'))", lambda d: _days(d.installed_on) < "2010-01-01"),
    ("S_INTERSECTS(geometry, {})".format(POLYGON), lambda d: d.intersects(shapely.from_wkt(POLYGON))),
    ("S_WITHIN(geometry, BBOX({}, {}, {}, {}))".format(*BOX), lambda d: d.within(shapely.box(*BOX))),
    ("S_DISJOINT(geometry, {}) AND status = '完好'".format(POLYGON),
     lambda d: d.disjoint(shapely.from_wkt(POLYGON)) & (d.status == "完好")),
]


@pytest.mark.parametrize("cql, expect", COMPARISONS, ids=[c for c, _ in COMPARISONS])
def test_cql2_text_on_components(http, components, cql, expect):
    expected = int(expect(components).sum())
    assert 0 < expected or "NOT NULL" in cql
    assert matched(http, "city_components", filter=cql) == expected


def test_cql2_equal_dates_and_timestamps(http, components, readings):
    day = components.installed_on.iloc[0].isoformat()
    assert matched(http, "city_components", filter=f"T_EQUALS(installed_on, DATE('{day}'))") == int(
        (components.installed_on.astype(str) == day).sum())
    t = pd.Timestamp(readings.observed_at.sort_values().iloc[1000])
    stamp = t.isoformat().replace("+00:00", "Z")
    assert matched(http, "water_quality", filter=f"T_EQUALS(observed_at, TIMESTAMP('{stamp}'))") == int(
        (readings.observed_at == t).sum())
    assert matched(http, "water_quality", filter=f"T_AFTER(observed_at, TIMESTAMP('{stamp}')) AND do > 5") == int(
        ((readings.observed_at > t) & (readings["do"] > 5)).sum())
    assert matched(http, "water_quality", filter="do IS NULL") == int(readings["do"].isna().sum())


def test_cql2_temporal_relations_of_instants(http, components):
    day = components.installed_on.iloc[0].isoformat()
    on_day = int((components.installed_on.astype(str) == day).sum())
    relations = {  # an instant [t, t] against an interval, per the CQL2 1.0 definitions
        f"T_STARTS(installed_on, INTERVAL('{day}', '2030-01-01'))": on_day,
        f"T_FINISHES(installed_on, INTERVAL('2000-01-01', '{day}'))": on_day,
        f"T_MEETS(installed_on, INTERVAL('{day}', '..'))": on_day,
        f"T_METBY(installed_on, INTERVAL('2000-01-01', '{day}'))": on_day,
        "T_CONTAINS(installed_on, INTERVAL('2000-01-01', '2030-01-01'))": 0,
        "T_OVERLAPS(installed_on, INTERVAL('2000-01-01', '2030-01-01'))": 0,
        "T_INTERSECTS(installed_on, INTERVAL('2000-01-01', '2030-01-01'))": len(components),
    }
    for cql, expected in relations.items():
        assert matched(http, "city_components", filter=cql) == expected, cql


@pytest.fixture(scope="module")
def grids(engine, loaded) -> gpd.GeoDataFrame:
    return frame(engine, "SELECT fid, geom FROM layers.grids ORDER BY fid")


@pytest.mark.parametrize("operator", ["S_INTERSECTS", "S_CONTAINS", "S_WITHIN", "S_TOUCHES", "S_OVERLAPS",
                                      "S_EQUALS", "S_DISJOINT"])
def test_cql2_spatial_relations_on_polygons(http, grids, operator):
    other = grids.geometry.iloc[len(grids) // 2]
    for probe in (shapely.from_wkt(POLYGON), other, other.representative_point()):
        predicate = {"S_EQUALS": "geom_equals"}.get(operator, operator[2:].lower())
        expected = int(getattr(grids, predicate)(probe).sum())
        assert matched(http, "grids", filter=f"{operator}(geometry, {probe.wkt})") == expected, (operator, probe)


def test_cql2_spatial_on_lines_and_distances(http, components, roads):
    polygon = shapely.from_wkt(POLYGON)
    assert matched(http, "roads", filter=f"S_INTERSECTS(geometry, {POLYGON})") == int(roads.intersects(polygon).sum())
    assert matched(http, "roads", filter=f"S_WITHIN(geometry, {POLYGON})") == int(roads.within(polygon).sum())
    assert matched(http, "roads", filter=f"S_CROSSES(geometry, {POLYGON})") == int(roads.crosses(polygon).sum())
    _, _, metres = pyproj.Geod(ellps="GRS80").inv(np.full(len(components), CENTRE[0]),
                                                  np.full(len(components), CENTRE[1]),
                                                  components.geometry.x, components.geometry.y)
    near = f"S_DWITHIN(geometry, POINT({CENTRE[0]} {CENTRE[1]}), 800)"
    assert matched(http, "city_components", filter=near) == int((metres <= 800).sum()) > 0
    lat_first = shapely.transform(polygon, lambda xy: xy[:, ::-1]).wkt
    assert matched(http, "city_components", filter=f"S_INTERSECTS(geometry, {lat_first})",
                   **{"filter-crs": EPSG.format(4326)}) == int(components.intersects(polygon).sum())
    x0, y0, x1, y1 = pyproj.Transformer.from_crs("OGC:CRS84", "EPSG:3857").transform_bounds(*BOX)
    assert matched(http, "city_components", filter=f"S_INTERSECTS(geometry, BBOX({x0}, {y0}, {x1}, {y1}))",
                   **{"filter-crs": "EPSG:3857"}) == int(components.intersects(shapely.box(*BOX)).sum())


def _json(op, *args):
    return {"op": op, "args": list(args)}


STATUS, INSTALLED, GEOMETRY = {"property": "status"}, {"property": "installed_on"}, {"property": "geometry"}
JSON_FILTERS = [
    (_json("=", STATUS, "破损"), "status = '破损'"),
    (_json("and", _json("in", STATUS, ["破损", "丢失"]), _json("t_after", INSTALLED, {"date": "2015-01-01"})),
     "status IN ('破损', '丢失') AND T_AFTER(installed_on, DATE('2015-01-01'))"),
    (_json("like", {"property": "code"}, "32021401%"), "code LIKE '32021401%'"),
    (_json("between", INSTALLED, {"date": "2010-01-01"}, {"date": "2012-12-31"}),
     "installed_on BETWEEN DATE('2010-01-01') AND DATE('2012-12-31')"),
    (_json("not", _json("isNull", {"property": "owner_unit"})), "owner_unit IS NOT NULL"),
    (_json("or", _json("<", INSTALLED, {"date": "2008-01-01"}), _json("=", STATUS, "丢失")),
     "installed_on < DATE('2008-01-01') OR status = '丢失'"),
    (_json("s_intersects", GEOMETRY, {"bbox": list(BOX)}), "S_INTERSECTS(geometry, BBOX({}, {}, {}, {}))".format(*BOX)),
    (_json("s_intersects", GEOMETRY, shapely.geometry.mapping(shapely.from_wkt(POLYGON))),
     f"S_INTERSECTS(geometry, {POLYGON})"),
    (_json("s_dwithin", GEOMETRY, {"type": "Point", "coordinates": list(CENTRE)}, 800),
     f"S_DWITHIN(geometry, POINT({CENTRE[0]} {CENTRE[1]}), 800)"),
    (_json("t_intersects", INSTALLED, {"interval": ["2010-01-01", ".."]}),
     "T_INTERSECTS(installed_on, INTERVAL('2010-01-01', '..'))"),
    (_json("t_during", INSTALLED, {"interval": ["2010-01-01", "2011-01-01"]}),
     "T_DURING(installed_on, INTERVAL('2010-01-01', '2011-01-01'))"),
]


@pytest.mark.parametrize("cql_json, cql_text", JSON_FILTERS, ids=[t for _, t in JSON_FILTERS])
def test_cql2_json_matches_its_text_form(http, components, cql_json, cql_text):
    by_json = matched(http, "city_components", filter=json.dumps(cql_json), **{"filter-lang": "cql2-json"})
    assert by_json == matched(http, "city_components", filter=cql_text) > 0


def test_queryables_schema(http):
    response = http.get("/collections/city_components/queryables")
    assert response.headers["content-type"] == "application/schema+json"
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["type"] == "object"
    props = schema["properties"]
    assert props["status"] == {"title": "部件状态", "type": "string",
                               "enum": ["完好", "破损", "丢失", "废弃", "占用"]}
    assert props["installed_on"] == {"title": "设置日期", "type": "string", "format": "date"}
    assert props["geometry"]["format"] == "geometry-point"
    assert http.get("/collections/rivers/queryables").json()["properties"]["width_m"] == {
        "title": "河宽", "type": "number", "minimum": 0, "maximum": 2000, "x-ogc-unit": "m"}
    readings = http.get("/collections/water_quality/queryables").json()["properties"]
    assert "geometry" not in readings and readings["observed_at"]["format"] == "date-time"
    assert readings["do"]["x-ogc-unit"] == "mg/L" and readings["water_class"]["type"] == "integer"
    assert http.get("/collections/imagery/queryables").status_code == 404


def test_collections_declare_crs_and_conformance(http):
    collection = http.get("/collections/city_components").json()
    assert collection["crs"] == [CRS84] + [EPSG.format(n) for n in (4326, 4490, 4549, 3857)]
    assert collection["storageCrs"] == EPSG.format(4490)
    assert "storageCrs" not in http.get("/collections/water_quality").json()
    conforms = set(http.get("/conformance").json()["conformsTo"])
    assert {"http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
            "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
            "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
            "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"} <= conforms


def test_as_of_reads_the_past(http, engine, components):
    fid, before = int(components.fid.iloc[20]), components.status.iloc[20]
    after = "破损" if before != "破损" else "完好"
    with engine.begin() as conn:
        then = conn.execute(text("SELECT clock_timestamp()")).scalar()
    with engine.begin() as conn:
        conn.execute(text("UPDATE layers.city_components SET status = :s WHERE fid = :f"), {"s": after, "f": fid})
        created = conn.execute(text(
            "INSERT INTO layers.city_components (code, status, geom) VALUES ('3202140101999999', '完好', "
            "ST_SetSRID(ST_Point(120.40, 31.50), 4490)) RETURNING fid")).scalar()
    with engine.begin() as conn:
        existed = conn.execute(text("SELECT clock_timestamp()")).scalar()
        conn.execute(text("DELETE FROM layers.city_components WHERE fid = :f"), {"f": created})
    try:
        item = f"{ITEMS.format('city_components')}/{fid}"
        assert http.get(item, params={"as_of": then.isoformat()}).json()["properties"]["status"] == before
        assert http.get(item).json()["properties"]["status"] == after
        was_before = f"status = '{before}'"
        assert matched(http, "city_components", filter=was_before, as_of=then.isoformat()) == int(
            (components.status == before).sum())
        assert matched(http, "city_components", filter=was_before) == int((components.status == before).sum()) - 1
        gone = f"{ITEMS.format('city_components')}/{created}"
        assert http.get(gone, params={"as_of": existed.isoformat()}).json()["properties"]["code"] == "3202140101999999"
        assert http.get(gone).status_code == 404
        assert http.get(gone, params={"as_of": then.isoformat()}).status_code == 404
        assert matched(http, "city_components", as_of=existed.isoformat()) == len(components) + 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE layers.city_components SET status = :s WHERE fid = :f"), {"s": before, "f": fid})


DISTRICT = "119.5,31,121,32"  # a bbox around every component: a filter that matches them all


def test_a_large_match_is_paged_without_counting_it_all(database_url, data_dir, loaded, engine, tmp_path):
    """Past items_count_limit matches beyond the page, a filtered page leaves numberMatched out (counting millions
    of matches costs more than the page); `next` links still walk every feature exactly once, and a page near
    the end counts again. The whole layer, unfiltered, is counted by the database (test_feature_count.py)."""
    import httpx

    from tests.server_support import logged_server

    with engine.connect() as conn:
        everything = set(conn.execute(text("SELECT fid FROM layers.city_components")).scalars())
    with logged_server(database_url, data_dir, tmp_path / "server.log", items_count_limit=500) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        first = http.get("/collections/city_components/items", params={"limit": 1000, "bbox": DISTRICT}).json()
        assert "numberMatched" not in first and first["numberReturned"] == 1000
        seen, url, pages = [], f"/collections/city_components/items?limit=1000&bbox={DISTRICT}", []
        while url:
            page = http.get(url).json()
            pages.append(page)
            seen += [f["id"] for f in page["features"]]
            url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        assert sorted(seen) == sorted(everything) and len(seen) == len(everything)
        assert pages[-1]["numberMatched"] == len(everything)  # within the bound of the last page
        assert all("numberMatched" not in p for p in pages if p["numberReturned"] == 1000 and
                   len(everything) - pages.index(p) * 1000 > 1500)
        exact = http.get("/collections/city_components/items",
                         params={"limit": 10, "offset": len(everything) - 505, "bbox": DISTRICT}).json()
        assert exact["numberMatched"] == len(everything)  # 505 left: within 10 + 500 of the offset
        html = http.get("/collections/city_components/items", params={"limit": 5, "f": "html", "bbox": DISTRICT})
        assert html.status_code == 200 and "5 features" in html.text
