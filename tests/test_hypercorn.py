"""The app unchanged under a second ASGI server (hypercorn): a tile, its 304 and a features page, as under
uvicorn. Nothing in the app, the tile fast path included, may depend on which server runs it."""

import httpx
import pytest

from tests.server_support import hypercorn_argv, logged_server

TILE = "/collections/roads/tiles/WebMercatorQuad/12/{y}/{x}"


@pytest.fixture(scope="module")
def hypercorn(loaded, database_url, data_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("hypercorn") / "server.log"
    with logged_server(database_url, data_dir, log, argv=hypercorn_argv) as base:
        yield base


def test_a_tile_and_its_304_under_hypercorn(hypercorn, http):
    with httpx.Client(base_url=hypercorn, timeout=30) as client:
        url = next(u for u in (TILE.format(x=x, y=y) for x in range(3410, 3425) for y in range(1660, 1680))
                   if client.get(u).status_code == 200)
        hit = client.get(url)
        assert hit.status_code == 200 and hit.headers["x-tile-cache"] == "hit"
        assert hit.headers["content-type"] == "application/vnd.mapbox-vector-tile"
        assert hit.content == http.get(url).content  # the same bytes as under uvicorn
        same = client.get(url, headers={"If-None-Match": hit.headers["etag"]})
        assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == hit.headers["etag"]
        miss = client.get(url + "?properties=name", headers={"Origin": "https://dashboard.example"})
        assert miss.status_code == 200 and miss.headers["x-tile-cache"] == "miss"
        assert miss.headers["access-control-allow-origin"] == "*"
        wrong = client.get(url + "?properties=nope")
        assert wrong.status_code == 400 and wrong.json()["code"] == "unknown_field"


def test_a_features_page_under_hypercorn(hypercorn, http):
    with httpx.Client(base_url=hypercorn, timeout=30) as client:
        page = client.get("/collections/rivers/items", params={"limit": 2})
    assert page.status_code == 200 and page.headers["content-type"].startswith("application/geo+json")
    assert len(page.json()["features"]) == 2
    assert [f["id"] for f in page.json()["features"]] == \
        [f["id"] for f in http.get("/collections/rivers/items", params={"limit": 2}).json()["features"]]
