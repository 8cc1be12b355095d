"""The shared tile cache: two servers (two workers of `twin serve --workers 2`, as far as tiles go) on one
Redis and one database. A tile one renders the other serves from Redis; a change made in SQL evicts it
from both, and tiles elsewhere stay shared."""

import httpx
import pytest
from sqlalchemy import text

from tests.server_support import REDIS_SERVER, free_port, logged_server, start_redis
from tests.tile_support import decode, mercator_tile, tile_url, wait_for

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed: `make setup` "
                                                             "installs it (Debian package redis-server)")
CODE = "3202140101999902"  # a test component of our own, removed at the end
HERE = (120.4012, 31.5213)
THERE = (120.5105, 31.4507)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    process = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def servers(loaded, database_url, data_dir, redis_url, tmp_path_factory):
    logs = tmp_path_factory.mktemp("redis-servers")
    with logged_server(database_url, data_dir, logs / "a.log", redis_url=redis_url) as a, \
            logged_server(database_url, data_dir, logs / "b.log", redis_url=redis_url) as b:
        with httpx.Client(base_url=a, timeout=30) as server_a, httpx.Client(base_url=b, timeout=30) as server_b:
            yield server_a, server_b


@pytest.fixture
def component(engine, loaded):
    yield
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.city_components WHERE code = :code"), {"code": CODE})


def codes(server: httpx.Client, url: str) -> set[str]:
    return {f["properties"].get("code") for f in decode(server.get(url).content).get("city_components", [])}


def test_servers_share_tiles_and_a_change_reaches_both(servers, engine, component):
    a, b = servers
    here, wide = (tile_url("city_components", mercator_tile(*HERE, z)) for z in (15, 12))
    there = tile_url("city_components", mercator_tile(*THERE, 15))
    for url in (here, wide, there):
        assert a.get(url).headers["x-tile-cache"] == "miss"
    from_a = a.get(here)
    from_b = b.get(here)
    assert from_b.headers["x-tile-cache"] == "hit", "server B rendered a tile server A had shared"
    assert (from_b.content, from_b.headers["etag"]) == (from_a.content, from_a.headers["etag"])
    assert CODE not in codes(b, here)

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, geom) "
                          "VALUES (:code, '完好', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))"),
                     {"code": CODE, "lon": HERE[0], "lat": HERE[1]})
    # both servers' listeners evict; until then a server may still answer from before the change
    assert wait_for(lambda: CODE in codes(a, here), 5), "server A kept serving the tile from before the change"
    assert wait_for(lambda: CODE in codes(b, here), 5), "server B kept serving the tile from before the change"
    # B never asked for the zoom-12 tile: it must not get A's copy from before the change out of Redis
    changed = b.get(wide)
    assert changed.headers["x-tile-cache"] == "miss" and CODE in codes(b, wide)
    assert b.get(there).headers["x-tile-cache"] == "hit", "a tile far from the change was evicted from Redis"
    assert a.get(there).headers["x-tile-cache"] == "hit"
