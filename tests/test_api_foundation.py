"""The foundation through real HTTP: health, the landing page, the collections."""

from layers.catalog import catalog


def test_health_reports_database_postgis_and_counts(http):
    body = http.get("/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["postgis"].startswith("3.")
    counts = body["features"]
    assert counts["districts"] == 7
    assert counts["streets"] == 6
    assert counts["city_components"] == 3000
    assert counts["pollution_sources"] >= 300
    assert counts["monitoring_stations"] >= 31  # ≥ 30 generated + the real 沙渚
    assert counts["metro_stations"] == 89 and counts["metro_lines"] == 4
    assert counts["water_bodies"] == 1


def test_landing_and_conformance(http):
    landing = http.get("/").json()
    rels = {link["rel"] for link in landing["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= rels
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in http.get("/conformance").json()["conformsTo"]
    assert http.get("/api").json()["openapi"].startswith("3.")


def test_collections_list_the_catalog_with_extents(http):
    body = http.get("/collections").json()
    ids = [c["id"] for c in body["collections"]]
    assert set(ids) == {layer for layer, spec in catalog().items() if not spec.private}  # private: with a key
    xinwu = next(c for c in body["collections"] if c["id"] == "streets")
    (x0, y0, x1, y1), = xinwu["extent"]["spatial"]["bbox"]
    assert 120.28 < x0 < x1 < 120.60 and 31.38 < y0 < y1 < 31.62
    readings = http.get("/collections/water_quality").json()
    start, end = readings["extent"]["temporal"]["interval"][0]
    assert start.startswith("2020-05-10")


def test_collection_urls_follow_the_proxy(http):
    body = http.get("/collections/rivers", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "map.example.cn",
                                                     "X-Forwarded-Prefix": "/twin"}).json()
    assert body["links"][0]["href"] == "https://map.example.cn/twin/collections/rivers"


def test_unknown_collection_is_a_json_404(http):
    response = http.get("/collections/no_such_layer")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_layer"
