"""Spatial queries over real HTTP.

A small hand-placed dataset (codes QT-…) lies around 120.95E 31.25N, far from the district's
data, so every answer is known: distances come from pyproj.Geod on the same coordinates,
containment from shapely. Then plausibility over the bundled district, as_of, bad input and
a statement timeout becoming a 503.
"""

import httpx
import pytest
import shapely
from pyproj import Geod, Transformer
from sqlalchemy import text

from tests.server_support import logged_server

GEOD = Geod(ellps="GRS80")  # the CGCS2000 ellipsoid, to 1e-11 in flattening
LON0, LAT0 = 120.95, 31.25
TOL = 0.5  # metres


def ll(x: float, y: float) -> tuple[float, float]:
    """Lon/lat about x metres east and y north of the origin (distances are measured, not assumed)."""
    return round(LON0 + x / 95_200, 9), round(LAT0 + y / 110_900, 9)


def metres(a, b) -> float:
    return GEOD.inv(*ll(*a), *ll(*b))[2]


def along(*xy) -> float:
    """Geodesic length of a polyline through the given local points."""
    return sum(metres(a, b) for a, b in zip(xy[:-1], xy[1:]))


def box(x0, y0, x1, y1) -> shapely.Polygon:
    return shapely.Polygon([ll(x0, y0), ll(x1, y0), ll(x1, y1), ll(x0, y1)])


RIVERS = {  # code: name, class, width, vertices upstream to downstream
    "QT-R1-01": ("QT河", "骨干河道", 30.0, [(x, 1000) for x in range(0, 4001, 500)]),
    "QT-R1-02": ("QT河", "骨干河道", 30.0, [(4000, 1000), (4500, 1000), (5000, 1000)]),
    "QT-R2": ("QT支河", "支河", 12.0, [(1500, y) for y in range(3000, 999, -500)]),  # ends on a vertex of R1-01
    "QT-R3": ("QT浜", "沟渠", 5.0, [(2750, 200), (2750, 600), (2750, 1000)]),  # ends inside a segment of R1-01
}
COMPONENTS = {"QT-C1": ("完好", "QT井盖", (300, 300)), "QT-C2": ("完好", "QT井盖", (1200, 1600)),
              "QT-C3": ("破损", "QT路灯", (1800, 2600)), "QT-C4": ("完好", "QT路灯", (2600, 500)),
              "QT-C5": ("丢失", "QT井盖", (3400, 3300)), "QT-C6": ("完好", "QT井盖", (4800, 2000))}
SOURCES = {"QT-P1": ("重点管理", (500, 1200)), "QT-P2": ("简化管理", (3100, 750)), "QT-P3": ("登记管理", (2000, 1400)),
           "QT-P4": ("重点管理", (4600, 1100)), "QT-P5": ("登记管理", (5250, 1000))}
STATIONS = {"QT-M1": (2200, 1000), "QT-M2": (3700, 1000), "QT-M3": (2750, 600)}
DISTRICT = box(0, 0, 4200, 4000)
STREETS = {"QT-S1": box(0, 0, 2000, 4000), "QT-S2": box(2000, 0, 4200, 4000)}
GRIDS = {"QT-G11": ("QT-S1", box(0, 0, 2000, 2000)), "QT-G12": ("QT-S1", box(0, 2000, 2000, 4000)),
         "QT-G21": ("QT-S2", box(2000, 0, 4200, 4000))}
TABLES = {"rivers": "code", "city_components": "code", "pollution_sources": "credit_code",
          "monitoring_stations": "code", "districts": "code", "streets": "code", "grids": "code"}


def _wkt(geom) -> str:
    return shapely.to_wkt(geom, rounding_precision=-1)


def _lines(points) -> str:
    return _wkt(shapely.MultiLineString([[ll(*p) for p in points]]))


@pytest.fixture(scope="module")
def known(server, engine):
    """The hand-placed features, inserted through SQL (so the history records them) and removed after."""
    with engine.begin() as conn:  # apart: a write is stamped with the start of its transaction
        before = conn.execute(text("SELECT clock_timestamp()")).scalar()
    with engine.begin() as conn:
        insert = lambda sql, rows: conn.execute(text(sql), rows)  # noqa: E731
        insert("INSERT INTO layers.rivers (code, name, river_class, width_m, geom) "
               "VALUES (:code, :name, :cls, :width, ST_GeomFromText(:wkt, 4490))",
               [{"code": c, "name": n, "cls": k, "width": w, "wkt": _lines(p)} for c, (n, k, w, p) in RIVERS.items()])
        insert("INSERT INTO layers.city_components (code, status, class_name, geom) "
               "VALUES (:code, :status, :cls, ST_GeomFromText(:wkt, 4490))",
               [{"code": c, "status": s, "cls": k, "wkt": _wkt(shapely.Point(ll(*p)))}
                for c, (s, k, p) in COMPONENTS.items()])
        insert("INSERT INTO layers.pollution_sources (credit_code, name, permit_class, geom) "
               "VALUES (:code, :code, :cls, ST_GeomFromText(:wkt, 4490))",
               [{"code": c, "cls": k, "wkt": _wkt(shapely.Point(ll(*p)))} for c, (k, p) in SOURCES.items()])
        insert("INSERT INTO layers.monitoring_stations (code, name, evaluation_type, geom) "
               "VALUES (:code, :code, 'river', ST_GeomFromText(:wkt, 4490))",
               [{"code": c, "wkt": _wkt(shapely.Point(ll(*p)))} for c, p in STATIONS.items()])
        polygon = "ST_Multi(ST_GeomFromText(:wkt, 4490))"
        insert(f"INSERT INTO layers.districts (code, name, geom) VALUES ('QT-D', 'QT区', {polygon})",
               [{"wkt": _wkt(DISTRICT)}])
        insert(f"INSERT INTO layers.streets (code, name, district_code, geom) VALUES (:code, :code, 'QT-D', {polygon})",
               [{"code": c, "wkt": _wkt(g)} for c, g in STREETS.items()])
        insert(f"INSERT INTO layers.grids (code, name, street_code, geom) VALUES (:code, :code, :street, {polygon})",
               [{"code": c, "street": s, "wkt": _wkt(g)} for c, (s, g) in GRIDS.items()])
    yield before
    with engine.begin() as conn:
        for table, key in TABLES.items():
            conn.execute(text(f'DELETE FROM layers.{table} WHERE "{key}" LIKE :mine'), {"mine": "QT-%"})


def ask(http, query: str, body: dict) -> dict:
    response = http.post(f"/query/{query}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def props(answer: dict, key: str = "code") -> dict:
    return {f["properties"][key]: f["properties"] for f in answer["features"]}


def test_the_queries_and_their_limits_are_listed(http):
    body = http.get("/query").json()
    assert set(body["queries"]) == {"nearest", "within", "intersects", "at", "aggregate", "trace"}
    assert body["limits"]["max_distance_m"] == 50_000 and body["limits"]["max_k"] == 1000


def test_nearest_features_of_two_layers_with_geodesic_distances(http, known):
    here = (1100, 1700)
    answer = ask(http, "nearest", {"point": list(ll(*here)), "layers": ["city_components", "rivers"], "k": 3})
    expected = sorted((metres(here, p), c) for c, (_, _, p) in COMPONENTS.items())[:3]
    components = [f for f in answer["features"] if f["properties"]["layer"] == "city_components"]
    assert [f["properties"]["code"] for f in components] == [c for _, c in expected]
    for f, (distance, _) in zip(components, expected):
        assert f["properties"]["distance_m"] == pytest.approx(distance, abs=TOL)
    rivers = [f for f in answer["features"] if f["properties"]["layer"] == "rivers"]
    assert [f["properties"]["code"] for f in rivers[:2]] == ["QT-R2", "QT-R1-01"]
    assert rivers[0]["properties"]["distance_m"] == pytest.approx(metres(here, (1500, 1700)), abs=TOL)
    assert rivers[1]["properties"]["distance_m"] == pytest.approx(metres(here, (1100, 1000)), abs=TOL)
    assert answer["counts"] == {"city_components": 3, "rivers": 3}
    distances = [f["properties"]["distance_m"] for f in answer["features"]]
    assert distances == sorted(distances)
    assert components[0]["geometry"]["coordinates"] == pytest.approx(ll(1200, 1600), abs=1e-8)


def test_nearest_within_a_maximum_distance_and_in_projected_crs(http, known):
    here = (1100, 1700)
    answer = ask(http, "nearest", {"point": list(ll(*here)), "layers": ["city_components"], "k": 10,
                                   "max_distance": 1000})
    assert [f["properties"]["code"] for f in answer["features"]] == ["QT-C2"]
    to_gk = Transformer.from_crs(4490, 4549, always_xy=True)
    east, north = to_gk.transform(*ll(*here))
    response = http.post("/query/nearest", json={"point": [north, east], "crs": "EPSG:4549",  # its axis order
                                                 "layers": ["city_components"], "k": 1})
    assert response.headers["content-crs"] == "<http://www.opengis.net/def/crs/EPSG/0/4549>"
    (nearest,) = response.json()["features"]
    assert nearest["properties"]["code"] == "QT-C2"
    assert nearest["properties"]["distance_m"] == pytest.approx(metres(here, (1200, 1600)), abs=TOL)
    assert nearest["geometry"]["coordinates"] == pytest.approx(to_gk.transform(*ll(1200, 1600))[::-1], abs=0.01)
    mercator = ask(http, "nearest", {"point": list(Transformer.from_crs(4490, 3857, always_xy=True)
                                                   .transform(*ll(*here))), "crs": "EPSG:3857",
                                     "layers": ["city_components"], "k": 1})
    assert mercator["features"][0]["properties"]["code"] == "QT-C2"


def test_within_a_distance_of_a_drawn_polygon(http, known):
    answer = ask(http, "within", {"layer": "city_components", "distance": 650,
                                  "geometry": shapely.geometry.mapping(box(0, 0, 2000, 2000))})
    found = props(answer)
    assert set(found) == {"QT-C1", "QT-C2", "QT-C3", "QT-C4"}
    assert found["QT-C1"]["distance_m"] == 0 and found["QT-C2"]["distance_m"] == 0
    assert found["QT-C3"]["distance_m"] == pytest.approx(metres((1800, 2600), (1800, 2000)), abs=TOL)
    assert found["QT-C4"]["distance_m"] == pytest.approx(metres((2600, 500), (2000, 500)), abs=TOL)


def test_pollution_sources_within_300_m_of_a_river_by_name(http, known):
    answer = ask(http, "within", {"layer": "pollution_sources", "distance": 300,
                                  "of": {"layer": "rivers", "where": {"name": "QT河"}}})
    assert answer["selected"] == 2  # both reaches of QT河
    found = props(answer, "credit_code")
    assert set(found) == {"QT-P1", "QT-P2", "QT-P4", "QT-P5"}  # QT-P3 is 400 m off
    assert found["QT-P1"]["distance_m"] == pytest.approx(metres((500, 1200), (500, 1000)), abs=TOL)
    assert found["QT-P2"]["distance_m"] == pytest.approx(metres((3100, 750), (3100, 1000)), abs=TOL)
    assert found["QT-P4"]["distance_m"] == pytest.approx(metres((4600, 1100), (4600, 1000)), abs=TOL)
    assert found["QT-P5"]["distance_m"] == pytest.approx(metres((5250, 1000), (5000, 1000)), abs=TOL)  # past its end
    by_list = ask(http, "within", {"layer": "pollution_sources", "distance": 520, "geometries": False,
                                   "of": {"layer": "rivers", "where": {"name": ["QT支河", "QT浜"], "width_m": [12, 5]}}})
    assert by_list["selected"] == 2
    found = props(by_list, "credit_code")
    assert set(found) == {"QT-P2", "QT-P3"}  # 350 m from QT浜, 500 m from QT支河
    assert found["QT-P3"]["distance_m"] == pytest.approx(metres((2000, 1400), (1500, 1400)), abs=TOL)
    assert all(f["geometry"] is None for f in by_list["features"])


def test_features_in_a_drawn_polygon_counted_by_category(http, known):
    area = box(1000, 0, 2900, 2000)
    answer = ask(http, "intersects", {"layers": ["city_components", "rivers", "pollution_sources"],
                                      "geometry": shapely.geometry.mapping(area),
                                      "group_by": {"city_components": ["status", "class_name"]}})
    inside = {c: s for c, (s, _, p) in COMPONENTS.items() if area.intersects(shapely.Point(ll(*p)))}
    assert inside.keys() == {"QT-C2", "QT-C4"}
    summary = answer["summary"]
    assert summary["city_components"]["count"] == 2
    assert summary["city_components"]["by"]["status"] == [{"value": "完好", "count": 2}]
    assert sorted(g["value"] for g in summary["city_components"]["by"]["class_name"]) == ["QT井盖", "QT路灯"]
    rivers = {c for c, (_, _, _, p) in RIVERS.items() if area.intersects(shapely.LineString([ll(*q) for q in p]))}
    assert summary["rivers"]["count"] == len(rivers) == 3
    assert sorted((g["value"], g["count"]) for g in summary["rivers"]["by"]["river_class"]) == [
        ("支河", 1), ("沟渠", 1), ("骨干河道", 1)]
    assert summary["pollution_sources"] == {"count": 1, "by": {"permit_class": [{"value": "登记管理", "count": 1}]}}
    assert {f["properties"]["code"] if "code" in f["properties"] else f["properties"]["credit_code"]
            for f in answer["features"]} == {"QT-C2", "QT-C4", "QT-P3"} | rivers
    counts_only = ask(http, "intersects", {"layers": ["city_components"], "features": False,
                                           "geometry": shapely.geometry.mapping(area)})
    assert counts_only["features"] == [] and counts_only["summary"]["city_components"]["count"] == 2


def test_the_polygons_at_a_point(http, known):
    answer = ask(http, "at", {"point": list(ll(500, 500))})
    assert sorted((f["properties"]["layer"], f["properties"]["code"]) for f in answer["features"]) == [
        ("districts", "QT-D"), ("grids", "QT-G11"), ("streets", "QT-S1")]
    assert all(f["geometry"] is None for f in answer["features"])
    streets = ask(http, "at", {"point": list(ll(3000, 3000)), "layers": ["streets"], "geometries": True})
    (street,) = streets["features"]
    assert street["properties"]["code"] == "QT-S2"
    assert shapely.geometry.shape(street["geometry"]).equals_exact(shapely.MultiPolygon([STREETS["QT-S2"]]), 1e-8)
    assert ask(http, "at", {"point": [121.9, 30.1]})["features"] == []


def test_components_per_street_by_status_and_river_widths_summed(http, known):
    answer = ask(http, "aggregate", {"layer": "city_components", "by": "streets", "group_by": "status"})
    streets = props(answer)
    for code, polygon in STREETS.items():
        statuses = [s for s, _, p in COMPONENTS.values() if polygon.intersects(shapely.Point(ll(*p)))]
        figures = streets[code]
        assert figures["count"] == len(statuses)
        for status in {"完好", "破损", "丢失", "废弃", "占用"}:
            assert figures[f"count:{status}"] == statuses.count(status)
    assert (streets["QT-S1"]["count:完好"], streets["QT-S1"]["count:破损"]) == (2, 1)
    assert set(answer["groups"]) >= {"完好", "破损", "丢失"}
    assert all(set(f["properties"]) == set(streets["QT-S1"]) for f in answer["features"])  # choropleth-ready
    assert streets["QT-S1"]["layer"] == "streets" and answer["layer"] == "city_components"
    widths = props(ask(http, "aggregate", {"layer": "rivers", "by": "streets", "sum": "width_m",
                                           "geometries": False}))
    for code, polygon in STREETS.items():
        crossing = [w for _, _, w, p in RIVERS.values() if polygon.intersects(shapely.LineString([ll(*q) for q in p]))]
        assert (widths[code]["count"], widths[code]["sum"]) == (len(crossing), pytest.approx(sum(crossing)))
    assert (widths["QT-S1"]["count"], widths["QT-S2"]["count"]) == (2, 3)


def _joined(engine, layer: str, by: str, group_by: str | None, summed: str | None, where: str = "TRUE") -> dict:
    """The plain join's figures, {(polygon code, value): (count, sum)}, straight from PostGIS."""
    value = f'c."{group_by}"' if group_by else "NULL"
    total = f'sum(c."{summed}")' if summed else "NULL"
    with engine.connect() as conn:
        rows = conn.execute(text(
            f"SELECT p.code, {value}, count(c.fid), {total} FROM layers.{by} p JOIN layers.{layer} c "
            f"ON ST_Intersects(p.geom, c.geom) WHERE {where} GROUP BY 1, 2")).all()
    return {(code, v): (n, (s or 0) if summed else None) for code, v, n, s in rows}  # the API sums nothing to 0


def _figures(answer: dict, group_by: str | None, summed: str | None) -> dict:
    found = {}
    for f in answer["features"]:
        p = f["properties"]
        for g in answer["groups"] if group_by else [None]:
            n = p[f"count:{'null' if g is None else g}"] if group_by else p["count"]
            if n:
                s = (p[f"sum:{'null' if g is None else g}"] if group_by else p["sum"]) if summed else None
                found[(p["code"], g)] = (n, s)
    return found


@pytest.mark.parametrize("layer,by,group_by,summed", [
    ("city_components", "streets", "status", None),
    ("city_components", "grids", "class_name", None),
    ("pollution_sources", "districts", None, None),
    ("monitoring_stations", "streets", "evaluation_type", "target_class"),
])
def test_points_counted_per_polygon_equal_the_plain_join(http, known, engine, layer, by, group_by, summed):
    """The cell-labelled count of points, with points on shared edges and corners of polygons, equals
    the plain ST_Intersects join; the hand-placed points agree with shapely too."""
    on_lines = {"QT-E1": (2000, 1000), "QT-E2": (2000, 2000), "QT-E3": (0, 500), "QT-E4": (4200, 4000),
                "QT-E5": (1000, 2000), "QT-E6": (-1, 500)}  # shared edge, corner of 5 polygons, outer edge …
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, class_name, geom) "
                          "VALUES (:code, '占用', 'QT边', ST_GeomFromText(:wkt, 4490))"),
                     [{"code": c, "wkt": shapely.Point(ll(*p)).wkt} for c, p in on_lines.items()])
    try:
        body = {"layer": layer, "by": by, "geometries": False, "group_by": group_by, "sum": summed}
        found = _figures(ask(http, "aggregate", {k: v for k, v in body.items() if v is not None}), group_by, summed)
        assert found == _joined(engine, layer, by, group_by, summed) and found
        if layer == "city_components" and by == "streets":
            for code, street in STREETS.items():
                inside = [c for c, p in on_lines.items() if street.intersects(shapely.Point(ll(*p)))]
                assert found.get((code, "占用"), (0, None))[0] == len(inside)
            assert found[("QT-S1", "占用")][0] == 4 and found[("QT-S2", "占用")][0] == 3
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.city_components WHERE code LIKE 'QT-E%'"))


def test_aggregate_counts_only_the_selected_features(http, known, engine):
    chosen = ["破损", "丢失"]
    answer = ask(http, "aggregate", {"layer": "city_components", "by": "streets", "group_by": "class_name",
                                     "where": {"status": chosen}, "geometries": False})
    assert _figures(answer, "class_name", None) == _joined(engine, "city_components", "streets", "class_name", None,
                                                            "c.status IN ('破损', '丢失')")
    streets = props(answer)
    assert streets["QT-S1"]["count"] == 1 and streets["QT-S2"]["count"] == 1  # QT-C3 破损, QT-C5 丢失
    nothing = ask(http, "aggregate", {"layer": "city_components", "by": "streets", "where": {"status": "不存在"}})
    assert all(f["properties"]["count"] == 0 for f in nothing["features"]) and nothing["groups"] == []
    empty_area = ask(http, "aggregate", {"layer": "city_components", "by": "streets", "as_of": "2020-01-01T00:00:00Z"})
    assert empty_area["features"] == []


def test_within_pages_through_the_matches_nearest_first(http, known):
    whole = ask(http, "within", {"layer": "city_components", "distance": 5000, "geometries": False,
                                 "geometry": {"type": "Point", "coordinates": list(ll(2000, 2000))}})
    codes = [f["properties"]["code"] for f in whole["features"]]
    assert whole["numberMatched"] == len(codes) == 6 and "next" not in whole
    paged, offset = [], 0
    while offset is not None:
        page = ask(http, "within", {"layer": "city_components", "distance": 5000, "geometries": False, "limit": 4,
                                    "offset": offset, "geometry": {"type": "Point",
                                                                   "coordinates": list(ll(2000, 2000))}})
        assert page["numberMatched"] == len(codes) and page["numberReturned"] <= 4
        paged += [f["properties"]["code"] for f in page["features"]]
        offset = page.get("next", {}).get("offset")
    assert paged == codes
    past = ask(http, "within", {"layer": "pollution_sources", "distance": 300, "limit": 10, "offset": 1000,
                                "of": {"layer": "rivers", "where": {"name": "QT河"}}})
    assert (past["numberMatched"], past["numberReturned"], past["features"]) == (4, 0, [])


def _trace(http, start, direction, distance, **extra) -> dict:
    return ask(http, "trace", {"point": list(ll(*start)), "direction": direction, "distance": distance, **extra})


def _reaches(answer) -> dict:
    return {f["properties"]["code"]: f["properties"] for f in answer["reaches"]["features"]}


def test_trace_downstream_from_a_tributary_into_the_interior_of_its_river(http, known):
    answer = _trace(http, (1500, 2000), "downstream", 2000, buffer=450)
    tributary = along((1500, 2000), (1500, 1500), (1500, 1000))
    assert answer["start"]["code"] == "QT-R2" and answer["start"]["offset_m"] == pytest.approx(0, abs=0.01)
    reaches = _reaches(answer)
    assert set(reaches) == {"QT-R2", "QT-R1-01"}
    assert (reaches["QT-R2"]["from_m"], reaches["QT-R2"]["to_m"]) == (0, pytest.approx(tributary, abs=TOL))
    assert reaches["QT-R1-01"]["from_m"] == pytest.approx(tributary, abs=TOL)
    assert reaches["QT-R1-01"]["to_m"] == pytest.approx(2000, abs=0.01)
    assert answer["length_m"] == pytest.approx(2000, abs=0.01)
    main = shapely.geometry.shape(next(f for f in answer["reaches"]["features"]
                                       if f["properties"]["code"] == "QT-R1-01")["geometry"])
    west, east = shapely.get_coordinates(main)[[0, -1]]
    assert GEOD.inv(*west, *ll(1500, 1000))[2] == pytest.approx(0, abs=0.01)
    assert GEOD.inv(*east, *ll(1500, 1000))[2] == pytest.approx(2000 - tributary, abs=TOL)
    (station,) = answer["monitoring_stations"]["features"]
    assert station["properties"]["code"] == "QT-M1"
    assert station["properties"]["along_m"] == pytest.approx(tributary + metres((1500, 1000), (2200, 1000)), abs=TOL)
    (source,) = answer["pollution_sources"]["features"]
    assert source["properties"]["credit_code"] == "QT-P3"
    assert source["properties"]["distance_m"] == pytest.approx(metres((2000, 1400), (2000, 1000)), abs=TOL)
    assert source["properties"]["along_m"] == pytest.approx(tributary + metres((1500, 1000), (2000, 1000)), abs=TOL)


def test_trace_upstream_branches_into_both_tributaries(http, known):
    answer = _trace(http, (3200, 1000), "upstream", 2000, buffer=450)
    to_ditch = along((3200, 1000), (3000, 1000), (2750, 1000))
    to_branch = to_ditch + along((2750, 1000), (2500, 1000), (2000, 1000), (1500, 1000))
    reaches = _reaches(answer)
    assert set(reaches) == {"QT-R1-01", "QT-R2", "QT-R3"}
    assert (reaches["QT-R1-01"]["from_m"], reaches["QT-R1-01"]["to_m"]) == (0, pytest.approx(2000, abs=0.01))
    assert reaches["QT-R1-01"]["length_m"] == pytest.approx(2000, abs=0.01)
    assert reaches["QT-R3"]["from_m"] == pytest.approx(to_ditch, abs=TOL)
    assert reaches["QT-R3"]["length_m"] == pytest.approx(along(*RIVERS["QT-R3"][3]), abs=TOL)  # all of it
    assert reaches["QT-R2"]["from_m"] == pytest.approx(to_branch, abs=TOL)
    assert reaches["QT-R2"]["length_m"] == pytest.approx(2000 - to_branch, abs=TOL)
    assert answer["length_m"] == pytest.approx(2000 + along(*RIVERS["QT-R3"][3]) + 2000 - to_branch, abs=TOL)
    stations = [(f["properties"]["code"], f["properties"]["along_m"])
                for f in answer["monitoring_stations"]["features"]]
    assert [code for code, _ in stations] == ["QT-M3", "QT-M1"]  # ordered along the trace; QT-M2 is downstream
    assert stations[0][1] == pytest.approx(to_ditch + metres((2750, 1000), (2750, 600)), abs=TOL)
    assert stations[1][1] == pytest.approx(metres((3200, 1000), (2200, 1000)), abs=TOL)
    sources = [(f["properties"]["credit_code"], f["properties"]["along_m"], f["properties"]["distance_m"])
               for f in answer["pollution_sources"]["features"]]
    assert [code for code, _, _ in sources] == ["QT-P2", "QT-P3"]
    assert sources[0][1:] == (pytest.approx(metres((3200, 1000), (3100, 1000)), abs=TOL),
                              pytest.approx(metres((3100, 750), (3100, 1000)), abs=TOL))
    assert sources[1][1] == pytest.approx(metres((3200, 1000), (2000, 1000)), abs=TOL)


def test_trace_from_a_confluence_and_across_reaches_cut_there(http, known):
    upstream = _reaches(_trace(http, (1500, 1000), "upstream", 500, geometries=False))
    assert set(upstream) == {"QT-R1-01", "QT-R2"}
    assert upstream["QT-R1-01"]["length_m"] == pytest.approx(500, abs=0.01)
    assert upstream["QT-R2"]["length_m"] == pytest.approx(500, abs=0.01)
    answer = _trace(http, (3700, 1000), "downstream", 1000, buffer=200)
    reaches = _reaches(answer)
    first = metres((3700, 1000), (4000, 1000))
    assert reaches["QT-R1-01"]["to_m"] == pytest.approx(first, abs=TOL)
    assert (reaches["QT-R1-02"]["from_m"], reaches["QT-R1-02"]["to_m"]) == (pytest.approx(first, abs=TOL),
                                                                            pytest.approx(1000, abs=0.01))
    assert [(f["properties"]["code"], f["properties"]["along_m"]) for f in answer["monitoring_stations"]["features"]] \
        == [("QT-M2", pytest.approx(0, abs=0.01))]
    (source,) = answer["pollution_sources"]["features"]
    assert source["properties"]["credit_code"] == "QT-P4"
    assert source["properties"]["along_m"] == pytest.approx(first + metres((4000, 1000), (4600, 1000)), abs=TOL)


def test_as_of_answers_from_the_layers_as_they_were(http, known, engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.rivers (code, name, geom) VALUES ('QT-R4', 'QT旧沟', "
                          "ST_GeomFromText(:wkt, 4490))"), {"wkt": _lines([(500, 0), (500, 1000)])})
        conn.execute(text("INSERT INTO layers.pollution_sources (credit_code, name, permit_class, geom) VALUES "
                          "('QT-P6', 'QT-P6', '登记管理', ST_GeomFromText(:wkt, 4490))"),
                     {"wkt": _wkt(shapely.Point(ll(600, 500)))})
    with engine.begin() as conn:  # a transaction of its own: a write is stamped with its transaction's start
        then = conn.execute(text("SELECT clock_timestamp()")).scalar()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.rivers WHERE code = 'QT-R4'"))
        conn.execute(text("DELETE FROM layers.pollution_sources WHERE credit_code = 'QT-P6'"))
    moment = then.isoformat()
    def traced(**when):
        return _reaches(_trace(http, (800, 1000), "upstream", 1000, geometries=False, **when))

    assert set(traced()) == {"QT-R1-01"}
    assert set(traced(as_of=moment)) == {"QT-R1-01", "QT-R4"}
    near = {"layer": "pollution_sources", "distance": 150, "of": {"layer": "rivers", "where": {"code": "QT-R4"}}}
    assert set(props(ask(http, "within", near | {"as_of": moment}), "credit_code")) == {"QT-P6"}
    assert http.post("/query/within", json=near).json()["code"] == "empty_selection"
    before = known.isoformat()
    assert ask(http, "at", {"point": list(ll(500, 500)), "as_of": before})["features"] == []
    assert "QT-S1" not in props(ask(http, "aggregate", {"layer": "city_components", "by": "streets", "as_of": before}))
    assert ask(http, "nearest", {"point": list(ll(800, 500)), "layers": ["pollution_sources"], "k": 1,
                                 "as_of": moment})["features"][0]["properties"]["credit_code"] == "QT-P6"


def test_bundled_district_plausibility(http, engine):
    stations = ask(http, "nearest", {"point": [120.45, 31.49], "layers": ["monitoring_stations"], "k": 5})
    distances = [f["properties"]["distance_m"] for f in stations["features"]]
    assert len(distances) == 5 and distances == sorted(distances) and distances[-1] < 10_000
    here = ask(http, "at", {"point": [120.45, 31.49], "layers": ["districts", "streets", "grids"]})
    assert sorted(f["properties"]["layer"] for f in here["features"]) == ["districts", "grids", "streets"]
    assert next(f for f in here["features"] if f["properties"]["layer"] == "districts")["properties"]["name"] == "新吴区"

    near = ask(http, "within", {"layer": "pollution_sources", "distance": 500,
                                "of": {"layer": "rivers", "where": {"name": "伯渎港"}}})
    assert near["selected"] >= 1 and near["numberReturned"] > 0
    assert all(0 <= f["properties"]["distance_m"] <= 500 for f in near["features"])
    everywhere = ask(http, "within", {"layer": "pollution_sources", "distance": 500, "geometries": False,
                                      "of": {"layer": "rivers", "where": {}}})
    assert everywhere["numberReturned"] >= near["numberReturned"]

    per_street = ask(http, "aggregate", {"layer": "city_components", "by": "streets", "group_by": "status",
                                         "geometries": False})
    district = {f["properties"]["code"]: f["properties"] for f in per_street["features"]
                if f["properties"]["district_code"] == "320214"}
    with engine.connect() as conn:
        counted = dict(conn.execute(text(
            "SELECT s.code, count(c.fid) FROM layers.streets s LEFT JOIN layers.city_components c "
            "ON ST_Contains(s.geom, c.geom) WHERE s.district_code = '320214' GROUP BY s.code")).all())
    assert {code: p["count"] for code, p in district.items()} == counted
    assert len(counted) == 6 and 2900 < sum(counted.values()) <= 3000
    for p in district.values():
        assert p["count"] == sum(p[f"count:{g}"] for g in per_street["groups"])

    canal_bound = ask(http, "trace", {"point": shapely.get_coordinates(shapely.geometry.shape(
        near["features"][0]["geometry"]))[0].tolist(), "direction": "downstream", "distance": 50_000,
        "snap": 600, "geometries": False})
    names = [f["properties"]["name"] for f in canal_bound["reaches"]["features"]]
    assert names[-1] == "京杭运河" and 0 < canal_bound["length_m"] <= 50_000
    along = [f["properties"]["along_m"] for f in canal_bound["monitoring_stations"]["features"]]
    assert along == sorted(along) and len(along) >= 1


BAD = [
    ("nearest", {"point": [120.4, 31.5], "layers": ["no_such_layer"]}, 422, "unknown_layer"),
    ("nearest", {"point": [120.4, 31.5], "layers": ["water_quality"]}, 422, "not_a_vector_layer"),
    ("nearest", {"point": [120.4, 31.5], "layers": ["rivers"], "k": 0}, 400, "invalid_parameter"),
    ("nearest", {"point": [120.4, 31.5], "layers": ["rivers"], "k": 1001}, 400, "invalid_parameter"),
    ("nearest", {"point": [120.4, 31.5], "layers": []}, 400, "invalid_parameter"),
    ("nearest", {"point": [120.4, 31.5], "layers": ["rivers"], "crs": "EPSG:9999"}, 400, "unsupported_crs"),
    ("nearest", {"point": [120.4, 31.5], "layers": ["rivers"], "as_of": "2024-01-01T00:00:00"}, 400,
     "invalid_parameter"),
    ("nearest", {"point": [420.4, 31.5], "layers": ["rivers"]}, 400, "invalid_coordinates"),
    ("nearest", {"point": {"type": "LineString", "coordinates": [[120, 31], [121, 31]]}, "layers": ["rivers"]}, 422,
     "wrong_geometry_type"),
    ("nearest", {"point": ["a", 31], "layers": ["rivers"]}, 400, "invalid_geometry"),
    ("nearest", {"point": [120.4, 31.5], "layers": ["rivers"], "radius": 5}, 400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 50_001, "geometry": {"type": "Point", "coordinates": [120.4, 31.5]}},
     400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": -1, "geometry": {"type": "Point", "coordinates": [120.4, 31.5]}},
     400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5}, 400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "limit": 0, "geometry": [120.4, 31.5]}, 400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "limit": 10_001, "geometry": [120.4, 31.5]}, 400,
     "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "offset": -1, "geometry": [120.4, 31.5]}, 400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "offset": 10**12, "geometry": [120.4, 31.5]}, 400,
     "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "limit": "ten", "geometry": [120.4, 31.5]}, 400,
     "invalid_parameter"),
    ("aggregate", {"layer": "city_components", "by": "streets", "where": {"colour": "red"}}, 422, "unknown_field"),
    ("aggregate", {"layer": "city_components", "by": "streets", "where": {"installed_on": "soon"}}, 400,
     "invalid_parameter"),
    ("aggregate", {"layer": "city_components", "by": "streets", "where": {"status": []}}, 400, "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "geometry": {"type": "Polygon", "coordinates": "x"}}, 400,
     "invalid_geometry"),
    ("within", {"layer": "rivers", "distance": 5, "geometry": {"type": "Feature", "geometry": None}}, 400,
     "invalid_geometry"),
    ("within", {"layer": "rivers", "distance": 5, "geometry": {"type": "MultiPoint", "coordinates": []}}, 400,
     "empty_geometry"),
    ("within", {"layer": "rivers", "distance": 5, "of": {"layer": "rivers", "where": {"colour": "red"}}}, 422,
     "unknown_field"),
    ("within", {"layer": "rivers", "distance": 5, "of": {"layer": "rivers", "where": {"width_m": "wide"}}}, 400,
     "invalid_parameter"),
    ("within", {"layer": "rivers", "distance": 5, "of": {"layer": "rivers", "where": {"name": "不存在河"}}}, 422,
     "empty_selection"),
    ("intersects", {"layers": ["rivers"], "geometry": {"type": "Point", "coordinates": [120.4, 31.5]}}, 422,
     "wrong_geometry_type"),
    ("intersects", {"layers": ["rivers"], "geometry": {"type": "Polygon", "coordinates": [
        [[120.4, 31.4], [120.5, 31.5], [120.5, 31.4], [120.4, 31.5], [120.4, 31.4]]]}}, 422, "invalid_geometry"),
    ("intersects", {"layers": ["rivers"], "group_by": {"rivers": ["depth"]}, "geometry": {
        "type": "Polygon", "coordinates": [[[120.4, 31.4], [120.5, 31.4], [120.5, 31.5], [120.4, 31.4]]]}}, 422,
     "unknown_field"),
    ("at", {"point": [120.4, 31.5], "layers": ["rivers"]}, 422, "wrong_layer_geometry"),
    ("aggregate", {"layer": "city_components", "by": "rivers"}, 422, "wrong_layer_geometry"),
    ("aggregate", {"layer": "city_components", "by": "streets", "sum": "status"}, 422, "unknown_field"),
    ("aggregate", {"layer": "streets", "by": "streets"}, 422, "same_layer"),
    ("trace", {"point": [121.9, 30.1], "direction": "upstream", "distance": 1000}, 422, "no_river_nearby"),
    ("trace", {"point": [120.4, 31.5], "direction": "sideways", "distance": 1000}, 400, "invalid_parameter"),
    ("trace", {"point": [120.4, 31.5], "direction": "upstream", "distance": 0}, 400, "invalid_parameter"),
]


@pytest.mark.parametrize("query,body,status,code", BAD, ids=[f"{q}-{c}-{i}" for i, (q, _, _, c) in enumerate(BAD)])
def test_bad_input_is_a_json_4xx_naming_the_problem(http, query, body, status, code):
    response = http.post(f"/query/{query}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.json()["description"]


def test_hostile_and_huge_input(http):
    nan = http.post("/query/nearest", content='{"point": [NaN, 31.5], "layers": ["rivers"]}',
                    headers={"Content-Type": "application/json"})
    assert (nan.status_code, nan.json()["code"]) == (400, "invalid_coordinates")
    ring = [[120.4 + 0.01 * i / 10_001, 31.4 + 0.001 * (i % 2)] for i in range(10_001)] + [[120.4, 31.4]]
    huge = http.post("/query/intersects", json={"layers": ["rivers"], "geometry": {"type": "Polygon",
                                                                                   "coordinates": [ring]}})
    assert (huge.status_code, huge.json()["code"]) == (413, "geometry_too_large")
    garbage = http.post("/query/within", content=b"\xff{not json", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400 and garbage.json()["description"]
    injection = http.post("/query/within", json={"layer": "rivers", "distance": 5, "of": {
        "layer": "rivers", "where": {"name": "x'; DROP TABLE layers.rivers; --"}}})
    assert injection.json()["code"] == "empty_selection"
    assert http.post("/query/nearest", json={"point": [120.4, 31.5], "layers": ["rivers"], "k": 1}).status_code == 200


def test_too_many_results_is_a_422_with_a_hint_and_counts_still_work(http, engine):
    bulk = 10_001
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, geom) SELECT 'QT-BULK-' || i, '完好', "
                          "ST_SetSRID(ST_MakePoint(121.2 + (i % 100) * 1e-5, 31.1 + (i / 100) * 1e-5), 4490) "
                          "FROM generate_series(1, :n) i"), {"n": bulk})
    try:
        area = {"type": "Polygon", "coordinates": [[[121.19, 31.09], [121.21, 31.09], [121.21, 31.11],
                                                    [121.19, 31.11], [121.19, 31.09]]]}
        response = http.post("/query/intersects", json={"layers": ["city_components"], "geometry": area})
        assert (response.status_code, response.json()["code"]) == (422, "too_many_results")
        assert "features=false" in response.json()["description"]
        counts = ask(http, "intersects", {"layers": ["city_components"], "geometry": area, "features": False})
        assert counts["summary"]["city_components"]["count"] == bulk
        response = http.post("/query/within", json={"layer": "city_components", "distance": 500,
                                                    "geometry": {"type": "Point", "coordinates": [121.2, 31.1]}})
        assert (response.status_code, response.json()["code"]) == (422, "too_many_results")
        assert "limit and offset" in response.json()["description"]
        page = ask(http, "within", {"layer": "city_components", "distance": 500, "limit": 100, "geometries": False,
                                    "geometry": {"type": "Point", "coordinates": [121.2, 31.1]}})
        assert (page["numberMatched"], page["numberReturned"]) == (bulk, 100)
        assert page["next"] == {"offset": 100, "limit": 100}
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.city_components WHERE code LIKE 'QT-BULK-%'"))


def test_a_query_stopped_by_the_statement_timeout_is_a_503_with_retry_after(database_url, data_dir, loaded):
    with logged_server(database_url, data_dir, data_dir / "timeout-server.log", statement_timeout_ms="300") as base:
        every_pair = {"layer": "city_components", "distance": 50_000, "geometries": False,
                      "of": {"layer": "rivers", "where": {}}}  # ~270,000 geodesic distances: seconds of work
        response = httpx.post(f"{base}/query/within", json=every_pair, timeout=30)
        assert response.status_code == 503, response.text[:200]
        assert response.json()["code"] == "query_timeout" and int(response.headers["retry-after"]) > 0
        quick = httpx.post(f"{base}/query/at", json={"point": [120.45, 31.49], "layers": ["districts"]}, timeout=30)
        assert quick.status_code == 200


def test_as_of_must_be_a_moment_and_before_the_data_there_is_none(http):
    response = http.post("/query/at", json={"point": [120.45, 31.49], "as_of": "yesterday"})
    assert response.status_code == 400 and "as_of" in response.json()["description"]
    assert ask(http, "at", {"point": [120.45, 31.49], "as_of": "2020-01-01T00:00:00+08:00"})["features"] == []
