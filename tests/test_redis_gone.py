"""Redis killed while a server shares its tiles there: tiles keep coming (rendered, then from the worker's
memory), every answer a 200 within the Redis timeouts, a change made meanwhile still shows in the next
tile; when Redis is back the server shares tiles again without a restart."""

import signal
import time

import httpx
import pytest
import redis
from sqlalchemy import text

from tests.server_support import REDIS_SERVER, free_port, logged_server, start_redis
from tests.tile_support import decode, mercator_tile, tile_url, wait_for

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (Debian package "
                                                             "redis-server)")
CODE = "3202140101999903"  # a test component of our own, removed at the end
HERE = (120.4212, 31.5313)
ELSEWHERE = [(120.36, 31.58), (120.52, 31.47), (120.47, 31.55)]


@pytest.fixture(scope="module")
def site(loaded, database_url, data_dir, engine, tmp_path_factory):
    """(server client, Redis port, Redis data dir) with a Redis of its own."""
    port = free_port()
    directory = tmp_path_factory.mktemp("redis-gone")
    process = start_redis(port, directory)
    processes = [process]
    try:
        with logged_server(database_url, data_dir, directory / "server.log",
                           redis_url=f"redis://127.0.0.1:{port}/0") as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            yield client, port, directory, processes
    finally:
        for p in processes:
            p.kill()
            p.wait()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.city_components WHERE code = :code"), {"code": CODE})


def shared_tiles(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return sum(1 for _ in client.scan_iter(match="twin:tile:*"))
    finally:
        client.close()


def test_serving_goes_on_without_redis_and_sharing_resumes(site, engine):
    client, port, directory, processes = site
    here = tile_url("city_components", mercator_tile(*HERE, 15))
    assert client.get(here).headers["x-tile-cache"] == "miss"
    assert shared_tiles(port) >= 1

    processes[0].send_signal(signal.SIGKILL)
    processes[0].wait()
    answers = []
    for z in (13, 14, 15, 16):
        for lon, lat in [HERE, *ELSEWHERE]:
            started = time.monotonic()
            r = client.get(tile_url("city_components", mercator_tile(lon, lat, z)))
            answers.append((r.status_code, time.monotonic() - started))
    assert {status for status, _ in answers} <= {200, 204}  # 204: no feature in that tile
    assert max(seconds for _, seconds in answers) < 2.5  # Redis's socket timeouts are 2 s
    again = tile_url("city_components", mercator_tile(*ELSEWHERE[1], 14))
    assert client.get(again).headers["x-tile-cache"] == "hit"  # the worker's memory still serves

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, geom) "
                          "VALUES (:code, '完好', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))"),
                     {"code": CODE, "lon": HERE[0], "lat": HERE[1]})

    def shows_change() -> bool:
        r = client.get(here)
        assert r.status_code in (200, 204)
        return r.status_code == 200 and CODE in {f["properties"].get("code") for f in decode(r.content).get("city_components", [])}

    assert wait_for(shows_change, 10), "a change made while Redis was down never reached the tile"
    assert client.get(here).headers["x-tile-cache"] == "hit", "after a change the worker stopped caching in memory"

    processes.append(start_redis(port, directory))
    # a tile rendered before the worker found Redis back stays in its memory only: ask new ones until one is shared
    fresh = (tile_url("city_components", mercator_tile(ELSEWHERE[0][0] + i * 0.002, ELSEWHERE[0][1], 17))
             for i in range(1000))
    assert wait_for(lambda: client.get(next(fresh)).status_code in (200, 204) and shared_tiles(port) >= 1, 15), \
        "tiles were not shared again once Redis was back"
