"""GET /metrics over real HTTP, parsed with prometheus-client's own parser: requests counted by route template
and status, ETL runs by outcome, the database pool; and, with PROMETHEUS_MULTIPROC_DIR, the sum over workers."""

import shutil
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import reachable_tmpdir
from tests.etl_support import component_codes, district_points, drop_database, engine_for, private_database
from tests.server_support import logged_server
from twin.auth import create_key

DB = "twin_metrics"
ITEMS = "/collections/{layer}/items"


@pytest.fixture(scope="module")
def site(database_url):
    """(base URL, database URL, data dir, write key) of a server on a private database."""
    url = private_database(database_url, DB)
    engine = engine_for(url)
    with engine.begin() as conn:
        key = create_key(conn, "城市管理局", ["city_components"])
    engine.dispose()
    data_dir = reachable_tmpdir("twin-metrics-")
    with logged_server(url, data_dir, data_dir / "server.log") as base:
        yield base, url, data_dir, key
    drop_database(database_url, DB)
    shutil.rmtree(data_dir, ignore_errors=True)


def samples(base: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) → value of every sample GET /metrics shows."""
    response = httpx.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(seen: dict, name: str, **labels) -> float:
    return seen.get((name, frozenset(labels.items())), 0.0)


def requests_counted(seen: dict, route: str, status: str, method: str = "GET") -> float:
    return value(seen, "twin_http_requests_total", method=method, route=route, status=status)


def test_requests_are_counted_by_route_template_and_status(site):
    base = site[0]
    before = samples(base)
    with httpx.Client(base_url=base, timeout=30) as http:
        for _ in range(3):
            assert http.get("/collections/city_components/items", params={"limit": 1}).status_code == 200
        assert http.get("/collections/no_such_layer/items").status_code == 404
        assert http.get("/raster/no_such_layer/info").status_code == 404
        assert http.get("/no/such/path").status_code == 404
    after = samples(base)
    assert requests_counted(after, ITEMS, "200") - requests_counted(before, ITEMS, "200") == 3
    assert requests_counted(after, ITEMS, "404") - requests_counted(before, ITEMS, "404") == 1
    # the prefix the raster routes are included under is named too: no layer name ever becomes a label value
    assert requests_counted(after, "/raster/{layer}/info", "404") - \
        requests_counted(before, "/raster/{layer}/info", "404") == 1
    assert requests_counted(after, "unmatched", "404") - requests_counted(before, "unmatched", "404") == 1
    routes = {dict(labels)["route"] for name, labels in after if name == "twin_http_requests_total"}
    assert not [r for r in routes if "city_components" in r or "no_such" in r or "/no/such" in r], routes
    assert value(after, "twin_http_request_duration_seconds_count", method="GET", route=ITEMS) >= 4


def test_pool_and_tile_cache_metrics_are_exposed(site):
    seen = samples(site[0])
    assert value(seen, "twin_db_pool_size", engine="primary") >= 1
    assert value(seen, "twin_db_pool_checked_out", engine="primary") >= 0
    names = {name for name, _ in seen}
    assert {"twin_db_pool_checked_in", "twin_db_pool_overflow", "twin_tile_cache_hits_total",
            "twin_tile_cache_misses_total"} <= names


def _upload(base: str, key: str, name: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{base}/etl/city_components", headers={"Authorization": f"Bearer {key}"},
                      files={"file": (name, content)}, timeout=60)


def _finished(base: str, key: str, location: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        run = httpx.get(location, headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
        if run["status"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_etl_runs_are_counted_by_status(site):
    base, _, _, key = site
    before = samples(base)
    codes = component_codes(1, 5)
    lon, lat = district_points(len(codes), seed=7)
    rows = "\n".join(f"{c},完好,{x},{y}" for c, x, y in zip(codes, lon, lat))
    started = _upload(base, key, "parts.csv", f"部件标识码,部件状态,经度,纬度\n{rows}\n".encode("utf-8-sig"))
    assert started.status_code == 202, started.text
    assert _finished(base, key, started.headers["location"])["status"] == "succeeded"
    refused = _upload(base, key, "parts.gpkg", b"code,status\n1,2\n")  # not a GeoPackage: the run fails at once
    assert refused.status_code == 422
    # the run's status is recorded before its session closes, and it is counted as that closes: wait for it
    deadline = time.monotonic() + 10
    while value(after := samples(base), "twin_etl_runs_total", status="succeeded") < \
            value(before, "twin_etl_runs_total", status="succeeded") + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    for status in ("succeeded", "failed"):
        assert value(after, "twin_etl_runs_total", status=status) - \
            value(before, "twin_etl_runs_total", status=status) == 1, status


def test_with_a_multiprocess_directory_any_worker_reports_every_workers_counts(site, tmp_path):
    _, url, data_dir, _ = site
    directory = reachable_tmpdir("twin-metrics-multiproc-")
    try:
        with logged_server(url, data_dir, tmp_path / "workers.log", workers=2,
                           environment={"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as base:
            answered_by, asked = set(), 0
            # a connection per request: the kernel hands each to either worker
            while len(answered_by) < 2 and asked < 200:
                assert httpx.get(f"{base}/collections", timeout=30).status_code == 200
                asked += 1
                seen = samples(base)
                answered_by |= {dict(labels)["pid"] for name, labels in seen if name == "twin_db_pool_size"}
                assert requests_counted(seen, "/collections", "200") == asked
            assert len(answered_by) == 2, f"one worker answered all {asked} scrapes"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
