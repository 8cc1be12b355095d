"""The tile cache follows the change log: a write evicts exactly the tiles it touches (single-layer and
composite, every zoom), untouched tiles stay cached, past as_of tiles stay, and a dropped listener
connection clears the cache and reconnects. Writes go straight to PostGIS, as any writer's would."""

from datetime import datetime, timezone

import morecantile
import pytest
from sqlalchemy import text

from tests.tile_support import decode, in_mercator_box, mercator_tile, points, tile_url, wait_for

CODE = "3202140101999901"  # a test component of our own, removed at the end
HERE = (120.4012, 31.5213)
THERE = (120.5105, 31.4507)  # far enough to be in other tiles at every zoom from 11 up


def cached(http, url: str) -> bool:
    return http.get(url).headers["x-tile-cache"] == "hit"


def warm(http, *urls: str) -> None:
    for url in urls:
        http.get(url)
        assert cached(http, url), url


def codes(http, url: str, layer: str = "city_components") -> set[str]:
    response = http.get(url)
    return {f["properties"].get("code") for f in decode(response.content).get(layer, [])}


@pytest.fixture
def component(engine, loaded):
    yield
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components WHERE code = :code"), {"code": CODE})


def write(engine, sql: str, lon: float, lat: float) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), {"code": CODE, "lon": lon, "lat": lat})


def test_a_change_evicts_touched_tiles_and_keeps_the_rest(http, engine, component):
    here14, there14 = mercator_tile(*HERE, 14), mercator_tile(*THERE, 14)
    here12 = mercator_tile(*HERE, 12)
    urls = {
        "here14": tile_url("city_components", here14),
        "here12": tile_url("city_components", here12),
        "here_onemap": f"/tiles/onemap/WebMercatorQuad/14/{here14.y}/{here14.x}",
        "here_roads": tile_url("roads", here14),  # same place, another layer: untouched
        "there14": tile_url("city_components", there14),
        "there_onemap": f"/tiles/onemap/WebMercatorQuad/14/{there14.y}/{there14.x}",
    }
    warm(http, *urls.values())
    before_insert = datetime.now(timezone.utc).isoformat()
    past = tile_url("city_components", here14) + f"?as_of={before_insert.replace('+00:00', 'Z')}"
    warm(http, past)
    untouched_etag = http.get(urls["there14"]).headers["etag"]

    write(engine, "INSERT INTO layers.city_components (code, status, geom) "
                  "VALUES (:code, '完好', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))", *HERE)
    assert wait_for(lambda: not cached(http, urls["here14"]), 5), "the touched tile was not evicted"
    for name in ("here12", "here_onemap"):
        assert not cached(http, urls[name]), name
    assert CODE in codes(http, urls["here14"]) and CODE in codes(http, urls["here_onemap"])
    assert CODE in codes(http, urls["here12"])
    for name in ("here_roads", "there14", "there_onemap"):
        assert cached(http, urls[name]), f"{name} was evicted though the change is elsewhere"
    assert http.get(urls["there14"]).headers["etag"] == untouched_etag
    assert cached(http, past) and CODE not in codes(http, past)  # the past does not change

    # a move evicts both the old and the new place
    there_url = urls["there14"]
    warm(http, urls["here14"], there_url)
    write(engine, "UPDATE layers.city_components SET geom = ST_SetSRID(ST_MakePoint(:lon, :lat), 4490) "
                  "WHERE code = :code", *THERE)
    assert wait_for(lambda: not cached(http, there_url), 5)
    assert not cached(http, urls["here14"])
    assert CODE in codes(http, there_url) and CODE not in codes(http, urls["here14"])
    assert cached(http, urls["here_roads"])


def test_every_zoom_of_a_change_is_evicted(http, engine, component):
    lon, lat = HERE
    urls = [tile_url("city_components", mercator_tile(lon, lat, z)) for z in (10, 11, 13, 16, 18)]
    far = tile_url("city_components", mercator_tile(*THERE, 18))
    warm(http, *urls, far)
    write(engine, "INSERT INTO layers.city_components (code, status, geom) "
                  "VALUES (:code, '丢失', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))", lon, lat)
    assert wait_for(lambda: not any(cached(http, u) for u in urls), 5)
    assert cached(http, far)
    assert CODE in codes(http, urls[-1])
    clusters = decode(http.get(urls[0]).content)["city_components"]  # zoom 10 is clustered
    z10 = mercator_tile(lon, lat, 10)
    inside = in_mercator_box(points(engine, "city_components"), morecantile.tms.get("WebMercatorQuad").xy_bounds(z10))
    assert sum(f["properties"]["point_count"] for f in clusters) == len(inside)


def test_a_change_near_a_tile_edge_evicts_the_neighbour_through_the_buffer(http, engine, component):
    """A point just outside a tile is drawn in that tile's buffer, so a change there evicts it too."""
    grid = morecantile.tms.get("WebMercatorQuad")
    tile = mercator_tile(*HERE, 16)
    bounds = grid.bounds(tile)
    just_right = (bounds.right + (bounds.right - bounds.left) * 0.005, (bounds.bottom + bounds.top) / 2)
    assert mercator_tile(*just_right, 16) != tile
    url = tile_url("city_components", tile)
    warm(http, url)
    write(engine, "INSERT INTO layers.city_components (code, status, geom) "
                  "VALUES (:code, '完好', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))", *just_right)
    assert wait_for(lambda: not cached(http, url), 5)
    assert CODE in codes(http, url)


def test_a_dropped_listener_clears_the_cache_and_reconnects(http, engine, component):
    url = tile_url("city_components", mercator_tile(*HERE, 15))
    warm(http, url)
    with engine.begin() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name = 'twin-tile-listener'")).scalar()
    assert killed >= 1
    assert wait_for(lambda: not cached(http, url), 5), "the cache kept serving without its listener"
    assert wait_for(lambda: cached(http, url), 10), "the listener did not come back"
    write(engine, "INSERT INTO layers.city_components (code, status, geom) "
                  "VALUES (:code, '完好', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))", *HERE)
    assert wait_for(lambda: not cached(http, url), 5)
    assert CODE in codes(http, url)



def test_the_order_of_a_repeated_parameter_is_part_of_the_key(http, loaded):
    """The last of a repeated parameter counts, so `properties=status&properties=code` and its reverse are two
    tiles: cached under one key, the second would be served the first's."""
    url = tile_url("city_components", mercator_tile(*HERE, 16))
    fields = {}
    for first, last in (("status", "code"), ("code", "status")):
        tile = decode(http.get(f"{url}?properties={first}&properties={last}").content)["city_components"]
        fields[last] = {key for feature in tile for key in feature["properties"]}
    assert fields == {"code": {"code"}, "status": {"status"}}
