"""The server across a database restart, on a cluster and server of its own.

While PostgreSQL is stopped every endpoint that needs it answers at once: 503 JSON with
Retry-After, never another 5xx, never a hang. Writes acknowledged before, during or after the
outage are all kept. Once the database is back the server serves again by itself, the tile
cache's change listener included.
"""

import threading
import time

import httpx
import pytest
from sqlalchemy import text

from tests.fault_support import LAYER, TILE, assert_acknowledged_writes_kept, assert_only_503_json_with_retry_after, \
    assert_recovered, hammering, recovered_at, station, station_site
from tests.server_support import logged_server
from tests.tile_support import decode, tile_url, wait_for

BOUND_S = 5.0  # no request may take longer, database up or down (pool_timeout_s 5, connect_timeout_s 3)
RECOVERY_S = 10.0  # every endpoint answers 200 again this soon after the database is back
WORKERS = 4
DOWN_S = 3.0


@pytest.fixture(scope="module")
def site():
    with station_site("twin-faults-") as built:
        yield built


@pytest.fixture(scope="module")
def restart(site):
    """Requests from WORKERS threads while the database is stopped for DOWN_S seconds and started again."""
    cluster, engine, key, base, log = site
    with hammering(base, key, WORKERS, BOUND_S) as (requests, outcomes):
        time.sleep(1.5)
        stopping = time.monotonic()
        cluster.down()  # pg_ctl stop -m fast: sessions are terminated mid-query
        down = time.monotonic()
        time.sleep(DOWN_S)
        starting = time.monotonic()
        cluster.up()
        up = time.monotonic()
        recovered = wait_for(lambda: recovered_at(outcomes, requests, up), seconds=RECOVERY_S + 5)
        time.sleep(1.0)
    return {"outcomes": outcomes, "stopping": stopping, "down": down, "starting": starting, "up": up,
            "recovered": recovered, "names": list(requests)}


def test_every_request_gets_an_answer_within_the_bound(restart):
    outcomes = restart["outcomes"]
    assert len(outcomes) > 100
    assert [o for o in outcomes if o.status is None] == []
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds <= BOUND_S, slowest
    print(f"\n{len(outcomes)} requests, {sum(o.status == 503 for o in outcomes)} answered 503, "
          f"slowest {slowest.seconds:.2f} s ({slowest.endpoint}, {slowest.status})")


def test_the_only_errors_are_503_json_with_retry_after(restart):
    assert_only_503_json_with_retry_after(restart["outcomes"])


def test_while_down_every_database_endpoint_answers_503(restart):
    down = [o for o in restart["outcomes"] if restart["down"] <= o.started and
            o.started + o.seconds <= restart["starting"]]
    by_endpoint = {name: {o.status for o in down if o.endpoint == name} for name in restart["names"]}
    assert by_endpoint == {name: {503} for name in restart["names"]}
    bodies = {o.json_body.get("code") for o in down if o.status == 503 and o.endpoint != "health"}
    assert bodies == {"database_unavailable"}


def test_the_server_recovers_by_itself(restart):
    seconds = assert_recovered(restart["outcomes"], restart["recovered"], restart["up"], RECOVERY_S)
    print(f"\nall endpoints answered 200 again {seconds:.2f} s after the database was back")


def test_acknowledged_writes_are_kept(restart, site):
    assert_acknowledged_writes_kept(restart["outcomes"], site[1])


def test_the_server_log_has_no_unhandled_exception(restart, site):
    log = site[4].read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "503 database_unavailable" in log


def test_the_tile_cache_follows_changes_again_after_the_restart(restart, site):
    _, _, key, base, _ = site
    with httpx.Client(base_url=base, timeout=10) as client:
        # the cache serves only while its change listener is connected
        hit = wait_for(lambda: client.get(tile_url(LAYER, TILE)).headers.get("x-tile-cache") == "hit", seconds=10)
        assert hit, "the tile cache never served again: its change listener did not reconnect"
        r = client.post(f"/collections/{LAYER}/items", json=station("AFTER", -2e-4),
                        headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201, r.text

        def codes():
            tile = client.get(tile_url(LAYER, TILE))
            return {f["properties"].get("code") for f in decode(tile.content).get(LAYER, [])}
        assert wait_for(lambda: "AFTER" in codes(), seconds=5), "the cached tile was not evicted after a write"


@pytest.fixture(scope="module")
def slow_site(site):
    """A second server on the same database with a 1 s statement timeout, a pool of 2 (+10 overflow)
    and a 0.5 s pool wait."""
    cluster, engine, key, _, log = site
    with logged_server(cluster.url(), log.parent, log.parent / "slow.log", statement_timeout_ms=1000,
                       pool_size=2, pool_timeout_s=0.5) as base:
        yield engine, base


def test_a_statement_timeout_and_an_exhausted_pool_are_503s(slow_site):
    """A table held locked (a long migration, say) stalls every read of it: each request ends after the
    statement timeout with 503 query_timeout, and the requests that find no free connection within the
    pool wait end with 503 database_unavailable; none waits longer than its bound."""
    engine, base = slow_site
    paths = [f"/collections/{LAYER}/items", tile_url(LAYER, TILE) + "?properties=code"]
    outcomes: list[tuple[int, str, str | None, float]] = []

    def ask(path: str) -> None:
        started = time.monotonic()
        r = httpx.get(base + path, timeout=30)
        outcomes.append((r.status_code, r.json().get("code"), r.headers.get("retry-after"), time.monotonic() - started))

    with engine.connect() as conn, conn.begin():
        conn.execute(text(f"LOCK TABLE layers.{LAYER} IN ACCESS EXCLUSIVE MODE"))
        threads = [threading.Thread(target=ask, args=(paths[i % 2],)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert len(outcomes) == 16
    assert {(status, code) for status, code, _, _ in outcomes} == {(503, "query_timeout"),
                                                                    (503, "database_unavailable")}
    assert all(retry is not None for _, _, retry, _ in outcomes)
    assert max(seconds for *_, seconds in outcomes) < 1.0 + 0.5 + 1.5  # statement timeout + pool wait + slack
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get(paths[0]).status_code == 200
