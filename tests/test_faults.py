"""The server across a database restart, on a cluster and server of its own.

While PostgreSQL is stopped every endpoint that needs it answers at once: 503 JSON with
Retry-After, never another 5xx, never a hang. Writes acknowledged before, during or after the
outage are all kept. Once the database is back the server serves again by itself, the tile
cache's change listener included.
"""

import itertools
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import reachable_tmpdir
from tests.server_support import logged_server
from tests.tile_support import MERCATOR, decode, mercator_tile, tile_url, wait_for
from twin.auth import create_key
from twin.cluster import Cluster
from twin.db import migrate

LAYER = "monitoring_stations"
TILE = mercator_tile(120.45, 31.49, 15)
BOUND_S = 5.0  # no request may take longer, database up or down (pool_timeout_s 5, connect_timeout_s 3)
RECOVERY_S = 10.0  # every endpoint answers 200 again this soon after the database is back
WORKERS = 4
DOWN_S = 3.0


def _centre() -> tuple[float, float]:
    b = MERCATOR.bounds(TILE)
    return (b.left + b.right) / 2, (b.bottom + b.top) / 2


def _station(code: str, dx: float = 0.0) -> dict:
    lon, lat = _centre()
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon + dx, lat]},
            "properties": {"code": code, "name": f"站点{code}", "evaluation_type": "river"}}


@contextmanager
def station_site(prefix: str, **server_options):
    """(cluster, sync engine, write key, base URL, server log) of a throwaway cluster holding a few stations, and
    a server of its own on it."""
    root = reachable_tmpdir(prefix)
    cluster = Cluster(root / "db")
    try:
        cluster.up()
        migrate(url=cluster.url())
        engine = create_engine(cluster.url().replace("postgresql://", "postgresql+psycopg://", 1),
                               pool_pre_ping=True)  # the test's own connections outlive the fault too
        lon, lat = _centre()
        with engine.begin() as conn:
            for i in range(5):
                conn.execute(text(f"INSERT INTO layers.{LAYER} (code, name, evaluation_type, geom) VALUES "
                                  "(:code, :name, 'river', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))"),
                             {"code": f"F{i}", "name": f"站点{i}", "lon": lon + i * 1e-4, "lat": lat})
            key = create_key(conn, "生态环境局", [LAYER])
        log = root / "server.log"
        with logged_server(cluster.url(), root, log, **server_options) as base:
            yield cluster, engine, key, base, log
        engine.dispose()
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def site():
    with station_site("twin-faults-") as built:
        yield built


@dataclass
class Outcome:
    endpoint: str
    started: float
    seconds: float
    status: int | None  # None: no HTTP answer at all
    retry_after: str | None = None
    json_body: dict | None = None
    content_type: str = ""


def _requests(key: str):
    """endpoint name → a function making its request's arguments (writes get a fresh code each time)."""
    codes, fresh = itertools.count(), itertools.count()
    nearest = {"point": list(_centre()), "layers": [LAYER], "k": 3}
    return {
        "health": lambda: ("GET", "/health", {}),
        "collections": lambda: ("GET", "/collections", {}),
        "items": lambda: ("GET", f"/collections/{LAYER}/items", {"params": {"limit": 5}}),
        "query": lambda: ("POST", "/query/nearest", {"json": nearest}),
        "tile": lambda: ("GET", tile_url(LAYER, TILE), {}),
        "tile miss": lambda: ("GET", tile_url(LAYER, TILE), {"params": {"fresh": next(fresh)}}),  # rendered each time
        "write": lambda: ("POST", f"/collections/{LAYER}/items",
                          {"json": _station(f"W{next(codes)}", 2e-4), "headers": {"Authorization": f"Bearer {key}"}}),
    }


def _hammer(base: str, requests: dict, offset: int, stop: threading.Event, outcomes: list[Outcome]) -> None:
    names = list(requests)
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in itertools.count(offset):
            if stop.is_set():
                return
            name = names[i % len(names)]
            method, path, kwargs = requests[name]()
            started = time.monotonic()
            try:
                r = client.request(method, path, **kwargs)
            except httpx.TransportError:
                outcomes.append(Outcome(name, started, time.monotonic() - started, None))
                continue
            body = r.json() if r.headers.get("content-type", "").startswith("application/") and \
                "json" in r.headers.get("content-type", "") else None
            outcomes.append(Outcome(name, started, time.monotonic() - started, r.status_code,
                                    r.headers.get("retry-after"), body, r.headers.get("content-type", "")))


def _recovered_at(outcomes: list[Outcome], names, since: float) -> float | None:
    """When every endpoint had answered a request started after `since` with success."""
    firsts = []
    for name in names:
        done = [o.started + o.seconds for o in list(outcomes) if o.endpoint == name and o.started >= since
                and o.status in (200, 201)]
        if not done:
            return None
        firsts.append(min(done))
    return max(firsts)


def assert_recovered(outcomes: list[Outcome], recovered: float | None, since: float, within: float) -> float:
    """Every endpoint succeeded again after `since`, within `within` seconds, and nothing failed after that:
    the seconds it took."""
    assert recovered is not None, "some endpoint never answered 200 again"
    assert recovered - since <= within
    after = [o for o in outcomes if o.started >= recovered]
    assert after and {o.status for o in after} <= {200, 201}
    return recovered - since


def assert_acknowledged_writes_kept(outcomes: list[Outcome], engine) -> tuple[dict, dict]:
    """Every write answered 201 is in the layer under the id it was given, with its change recorded:
    (acknowledged, stored), code → fid."""
    acknowledged = {o.json_body["properties"]["code"]: o.json_body["id"] for o in outcomes
                    if o.endpoint == "write" and o.status == 201}
    with engine.connect() as conn:
        stored = dict(conn.execute(text(f"SELECT code, fid FROM layers.{LAYER} WHERE code LIKE 'W%'")).all())
        logged = set(conn.execute(text("SELECT fid FROM twin.change WHERE layer = :layer AND operation = 'insert'"),
                                  {"layer": LAYER}).scalars())
    assert acknowledged and {code: stored.get(code) for code in acknowledged} == acknowledged
    assert set(acknowledged.values()) <= logged and set(stored.values()) <= logged
    return acknowledged, stored


def assert_only_503_json_with_retry_after(outcomes: list[Outcome]) -> None:
    """Every answer a success or a 503 with Retry-After and a JSON reason, and there were 503s."""
    others = [(o.endpoint, o.status, o.json_body) for o in outcomes if o.status not in (200, 201, 503)]
    assert not others, others
    unavailable = [o for o in outcomes if o.status == 503]
    assert unavailable
    for o in unavailable:
        assert o.retry_after is not None and int(o.retry_after) > 0, o
        assert o.content_type == "application/json", o
        assert o.json_body is not None and (o.json_body.get("code") or o.json_body.get("status")), o


@contextmanager
def hammering(base: str, key: str, workers: int, bound_s: float):
    """`workers` threads asking every endpoint in turn while the block runs: (requests, outcomes)."""
    requests = _requests(key)
    outcomes: list[Outcome] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(base, requests, i, stop, outcomes), daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield requests, outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=bound_s + 30)


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
        recovered = wait_for(lambda: _recovered_at(outcomes, requests, up), seconds=RECOVERY_S + 5)
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
        r = client.post(f"/collections/{LAYER}/items", json=_station("AFTER", -2e-4),
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
