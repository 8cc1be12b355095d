"""HTML pages of the features API for a person in a browser, over real HTTP.

f=html (or a browser's Accept header) gives a page; clients keep getting JSON. Every value a page
prints is escaped: a hostile property comes back as text, never as markup.
"""

import html as html_text
import re

import pytest
from sqlalchemy import text

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def page(http, url: str, **headers) -> str:
    response = http.get(url, headers=headers)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def cells(body: str) -> list[list[str]]:
    """The text of each table row's cells, unescaped."""
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    return [[html_text.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
             for cell in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)] for row in rows]


@pytest.fixture
def hostile(engine):
    """A street whose name is markup, removed after."""
    with engine.begin() as conn:
        fid = conn.execute(text(
            "INSERT INTO layers.streets (code, name, district_code, geom) VALUES ('HT-1', :name, 'HT', "
            "ST_Multi(ST_GeomFromText('POLYGON((121.9 30.1, 121.91 30.1, 121.91 30.11, 121.9 30.1))', 4490))) "
            "RETURNING fid"), {"name": HOSTILE}).scalar()
    yield fid
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.streets WHERE code = 'HT-1'"))


def test_landing_and_collections_pages_list_every_layer(http):
    landing = page(http, "/?f=html")
    assert "OneMap Twin" in landing and 'href="http://' in landing and "/collections?f=html" in landing
    listed = http.get("/collections").json()["collections"]
    rows = cells(page(http, "/collections?f=html"))
    assert [r[0] for r in rows[1:]] == [c["id"] for c in listed]
    assert [r[1] for r in rows[1:]] == [c["title"] for c in listed]


def test_a_collection_page_has_its_title_extent_and_items_link(http):
    described = http.get("/collections/streets").json()
    body = page(http, "/collections/streets?f=html")
    assert f"<h1>{described['title']} <small>streets</small></h1>" in body
    assert "/collections/streets/items?f=html" in body
    bbox = ", ".join(str(v) for v in described["extent"]["spatial"]["bbox"][0])
    assert ["bbox", bbox] in cells(body)


def test_items_page_is_a_table_of_the_same_features_with_paging(http, engine):
    body = page(http, "/collections/streets/items?f=html&limit=2&sortby=code")
    with engine.connect() as conn:
        first = conn.execute(text("SELECT fid, code, name FROM layers.streets ORDER BY code, fid LIMIT 2")).all()
        total = conn.execute(text("SELECT count(*) FROM layers.streets")).scalar()
    rows = cells(body)
    assert rows[0][:3] == ["id", "code", "name"]
    assert [r[:3] for r in rows[1:]] == [[str(fid), code, name] for fid, code, name in first]
    assert f"2 of {total} features" in body
    assert 'rel="next"' in body and "offset=2" in body and "f=html" in body
    empty = page(http, f"/collections/streets/items?f=html&offset={total + 5}")
    assert f"0 of {total} features" in empty and len(cells(empty)) == 1


def test_one_item_page_shows_every_property_and_the_geometry(http):
    feature = http.get("/collections/streets/items/1").json()
    body = page(http, "/collections/streets/items/1?f=html")
    rows = {r[0]: r[1] for r in cells(body)}
    assert {k: v for k, v in rows.items() if k in feature["properties"]} == {
        k: "" if v is None else str(v) for k, v in feature["properties"].items()}
    assert '"MultiPolygon"' in html_text.unescape(body)


def test_browsers_get_html_and_clients_keep_json(http):
    assert page(http, "/collections/streets/items?limit=1", accept=BROWSER).startswith("<!doctype html>")
    for accept in (None, "*/*", "application/json", "application/geo+json, application/json",
                   "text/html;q=0.5, application/json"):
        response = http.get("/collections/streets/items?limit=1", headers={"accept": accept} if accept else {})
        assert response.headers["content-type"] == "application/geo+json" and response.json()["numberReturned"] == 1
    forced = http.get("/collections/streets?f=json", headers={"accept": BROWSER})
    assert forced.headers["content-type"] == "application/json" and forced.json()["id"] == "streets"


def test_a_hostile_property_is_escaped(http, hostile):
    for url in (f"/collections/streets/items/{hostile}?f=html", "/collections/streets/items?f=html&limit=1000"):
        body = page(http, url)
        assert "<script" not in body and "<img" not in body
        assert HOSTILE in [c for row in cells(body) for c in row]


@pytest.mark.parametrize("url,status,code", [
    ("/collections?f=xml", 400, "invalid_parameter"),
    ("/?f=", 400, "invalid_parameter"),
    ("/collections/streets/items?f=" + "h" * 5000, 400, "invalid_parameter"),
    ("/collections/no_such_layer?f=html", 404, "unknown_layer"),
    ("/collections/streets/items/999999999?f=html", 404, "unknown_feature"),
    ("/collections/streets/items?f=html&limit=abc", 400, "invalid_parameter"),
])
def test_bad_input_is_still_a_json_4xx(http, url, status, code):
    response = http.get(url, headers={"accept": BROWSER})
    assert response.status_code == status, response.text[:300]
    assert response.json()["code"] == code and response.json()["description"]
    if "f=h" in url:
        assert len(response.json()["description"]) < 200


@pytest.mark.parametrize("accept", ["text/html;q=abc, application/json", ";;;,,,q=", "x" * 8000,
                                    "text/html;q=-5", "text/html;q=2, application/json;q=1"])
def test_odd_accept_headers_are_answered(http, accept):
    response = http.get("/collections/streets", headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in ("application/json", "text/html")
