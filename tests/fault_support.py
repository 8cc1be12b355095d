"""Faults under load, shared by the database restart (test_faults) and freeze (test_db_freeze) tests: a throwaway
cluster with a few stations and a server of its own, threads asking every endpoint in turn, and what their
answers must show."""

import itertools
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import create_engine, text

from tests.conftest import reachable_tmpdir
from tests.server_support import logged_server
from tests.tile_support import MERCATOR, mercator_tile, tile_url
from twin.auth import create_key
from twin.cluster import Cluster
from twin.db import migrate

LAYER = "monitoring_stations"
TILE = mercator_tile(120.45, 31.49, 15)


def _centre() -> tuple[float, float]:
    b = MERCATOR.bounds(TILE)
    return (b.left + b.right) / 2, (b.bottom + b.top) / 2


def station(code: str, dx: float = 0.0) -> dict:
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
                          {"json": station(f"W{next(codes)}", 2e-4), "headers": {"Authorization": f"Bearer {key}"}}),
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


def recovered_at(outcomes: list[Outcome], names, since: float) -> float | None:
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
