"""Public tiles answered by the tile fast path (tiles.fastpath, ASGI, in front of the router) and the other
tiles by the routes, on raw connections: what a browser, a proxy or a pipelining client sends, byte for byte."""

import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.server_support import logged_server

ROADS = "/collections/roads/tiles/WebMercatorQuad/12/{y}/{x}"


@pytest.fixture
def cached(http, loaded):
    """A cached roads tile (its URL and bytes) and an uncached one (its URL and bytes, fetched with a query
    that keeps the cached variant untouched)."""
    for x in range(3410, 3425):
        for y in range(1660, 1680):
            url = ROADS.format(x=x, y=y)
            first = http.get(url)
            if first.status_code == 200:
                assert http.get(url).headers["x-tile-cache"] == "hit"
                return url, first.content, first.headers["etag"]
    raise AssertionError("no roads tile at z12 over the district")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(base: str, raw: bytes, expected: int) -> tuple[list[Answer], bool]:
    """Send `raw` at once; read `expected` responses off the connection in order, and whether the server
    then closed it."""
    where = urlsplit(base)
    with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
        conn.sendall(raw)
        reader, answers = conn.makefile("rb"), []
        for _ in range(expected):
            status = reader.readline()
            if not status:
                break
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            answers.append(Answer(int(status.split()[1]), headers, reader.read(int(headers.get("content-length", 0)))))
        closed = answers[-1].headers.get("connection") == "close" and reader.read(1) == b""
    return answers, closed


def request(path: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers] + ([f"Content-Length: {len(body)}"] if body else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_pipelined_hits_and_misses_come_back_in_order(server, cached, http):
    url, data, _ = cached
    miss = url + "?properties=name"
    sent = request(url) + request(miss) + request(url) + request("/collections/roads") + request(url)
    answers, closed = exchange(server, sent, 5)
    assert [a.status for a in answers] == [200] * 5 and not closed
    assert [a.headers.get("x-tile-cache") for a in answers] == ["hit", "miss", "hit", None, "hit"]
    assert answers[0].body == answers[2].body == answers[4].body == data
    assert answers[1].body == http.get(miss).content and b'"id":"roads"' in answers[3].body


def test_not_modified_and_etag(server, cached):
    url, data, etag = cached
    (same, other), _ = exchange(server, request(url, f"If-None-Match: {etag}") +
                                request(url, 'If-None-Match: "stale"'), 2)
    assert same.status == 304 and same.body == b"" and same.headers["etag"] == etag
    assert other.status == 200 and other.body == data and other.headers["etag"] == etag
    assert other.headers["content-type"] == "application/vnd.mapbox-vector-tile"


def test_http10_and_connection_close_end_the_connection(server, cached):
    url, data, _ = cached
    (old,), closed = exchange(server, f"GET {url} HTTP/1.0\r\n\r\n".encode(), 1)
    assert old.status == 200 and old.body == data and closed
    answers, closed = exchange(server, request(url, "Connection: close") + request(url), 2)
    assert [a.status for a in answers] == [200] and closed  # the second request is never read


def test_a_body_on_a_cached_get_is_skipped_and_the_connection_goes_on(server, cached):
    url, data, _ = cached
    answers, _ = exchange(server, request(url, body=b"x" * 5000) + request(url), 2)
    assert [(a.status, a.body) for a in answers] == [(200, data), (200, data)]


def test_what_the_fast_path_does_not_answer_goes_to_the_app(server, cached):
    url, data, _ = cached
    encoded = url.replace("/roads/", "/ro%61ds/")  # the same tile, percent-encoded: the server decodes it
    post = request(url, "Content-Type: application/json", method="POST", body=b"{}")
    (by_app, refused), _ = exchange(server, request(encoded) + post, 2)
    assert by_app.status == 200 and by_app.body == data
    assert refused.status == 405 and json.loads(refused.body)["code"] == "method_not_allowed"


def wrong_requests(url: str) -> dict[str, tuple[int, str]]:
    """Tile requests each wrong in one way (`url`: a roads tile), and the status and code each gets."""
    return {"/collections/nope/tiles/WebMercatorQuad/12/1/1": (404, "unknown_layer"),
            "/collections/roads/tiles/WebMercatorQuad/40/1/1": (400, "tile_out_of_range"),
            "/collections/roads/tiles/WebMercatorQuad/12/a1/1": (400, "invalid_parameter"),
            "/collections/roads/tiles/NoSuchGrid/12/1/1": (404, "unknown_tile_matrix_set"),
            "/collections/roads/tiles/WebMercatorQuad/3/1/1": (404, "zoom_out_of_range"),
            url + "?properties=nope": (400, "unknown_field"),
            url + "?filter=lanes%20%3E": (400, "invalid_filter"),
            url + "?filter-lang=cql-text&filter=lanes%3D2": (400, "invalid_parameter"),
            url + "?filter-crs=EPSG:99999": (400, "unsupported_crs"),
            url + "?as_of=yesterday": (400, "invalid_parameter"),
            "/tiles/onemap/WebMercatorQuad/12/1/1?layers=nope": (400, "unknown_layer"),
            f"/collections/roads/tiles/WebMercatorQuad/12/{'9' * 5000}/1": (400, "tile_out_of_range"),
            url + "?filter=name%3D%27a%00%27": (400, "invalid_parameter")}  # a NUL: left to the app


def ask_wrong(base: str, url: str, origin: str) -> list[tuple[str, int, str, Answer]]:
    """(path, expected status, expected code, answer) of each wrong request, sent pipelined with `origin`."""
    wrong = wrong_requests(url)
    answers, closed = exchange(base, b"".join(request(path, origin) for path in wrong), len(wrong))
    assert not closed and len(answers) == len(wrong)
    return [(path, status, code, answer) for (path, (status, code)), answer in zip(wrong.items(), answers)]


def test_misses_answered_before_the_app_say_what_is_wrong_as_the_app_does(server, cached, http):
    """A public tile's miss is rendered by the fast path, in front of the app: the same 4xx JSON as the app's
    handlers give, with the same CORS headers."""
    url, _, _ = cached
    for path, status, code, answer in ask_wrong(server, url, "Origin: https://dashboard.example"):
        assert (answer.status, json.loads(answer.body)["code"]) == (status, code), (path, answer.body)
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["access-control-allow-origin"] == "*"
        in_process = http.get(path, headers={"Origin": "https://dashboard.example"})
        assert (in_process.status_code, in_process.json()) == (answer.status, json.loads(answer.body))


def test_hits_are_access_logged_when_the_log_is_on(database_url, data_dir, loaded, cached, tmp_path):
    url, _, _ = cached
    log = tmp_path / "server.log"
    with logged_server(database_url, data_dir, log, access_log=True) as base:
        answers, _ = exchange(base, request(url) + request(url), 2)
        assert [a.headers["x-tile-cache"] for a in answers] == ["miss", "hit"]
    lines = [line for line in log.read_text().splitlines() if url in line]
    assert len(lines) == 2 and all(f'"GET {url} HTTP/1.1" 200' in line for line in lines)


def test_cross_origin_map_clients_get_the_same_headers_from_hits_and_misses(server, cached):
    url, data, _ = cached
    origin = "Origin: https://dashboard.example"
    fresh = url + "?properties=name,lanes"
    (miss, hit), _ = exchange(server, request(fresh, origin) + request(fresh, origin), 2)
    assert (miss.headers["x-tile-cache"], hit.headers["x-tile-cache"]) == ("miss", "hit")
    for answer in (miss, hit):
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "ETag" in answer.headers["access-control-expose-headers"]
    (preflight,), _ = exchange(server, request(url, origin, "Access-Control-Request-Method: GET",
                                               "Access-Control-Request-Headers: authorization", method="OPTIONS"), 1)
    assert preflight.status == 200 and "authorization" in preflight.headers["access-control-allow-headers"].lower()


def test_a_list_of_allowed_origins_is_checked_on_hits_too(database_url, data_dir, loaded, cached, tmp_path):
    """An Origin only CORSMiddleware can judge sends the tile to the routes: the same tile, and for a wrong
    request the same refusal as the fast path gives (one parser, tiles.request)."""
    url, data, etag = cached
    with logged_server(database_url, data_dir, tmp_path / "server.log",
                       cors_origins='["https://map.example"]') as base:
        first, _ = exchange(base, request(url), 1)
        sent = (request(url, "Origin: https://map.example") + request(url, "Origin: https://elsewhere.example")
                + request(url, "Origin: https://map.example", f"If-None-Match: {etag}"))
        (allowed, other, same), _ = exchange(base, sent, 3)
        by_routes = ask_wrong(base, url, "Origin: https://map.example")
        by_fast_path = ask_wrong(base, url, "Accept: */*")  # no Origin: the fast path answers
    assert first[0].status == allowed.status == other.status == 200
    assert first[0].body == allowed.body == other.body == data
    assert allowed.headers["access-control-allow-origin"] == "https://map.example"
    assert "access-control-allow-origin" not in other.headers
    assert same.status == 304 and same.body == b"" and same.headers["etag"] == etag
    for (path, status, code, routed), (_, _, _, fast) in zip(by_routes, by_fast_path):
        assert (routed.status, json.loads(routed.body)["code"]) == (status, code), (path, routed.body)
        assert json.loads(routed.body) == json.loads(fast.body), path
        assert routed.headers["access-control-allow-origin"] == "https://map.example"


def test_malformed_request_lines_get_a_400_and_the_server_goes_on(server, cached):
    url, data, _ = cached
    for raw in (b"GET /collections/roads/tiles/WebMercatorQuad/12/\xff\xfe/1 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET " + url.encode() + b"?\xff=\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET " + url.encode() + b" HTTP/9.9\r\nHost: t\r\n\r\n"):
        answers, _ = exchange(server, raw, 1)
        assert [a.status for a in answers] == [400], raw
    answers, _ = exchange(server, request(url), 1)
    assert answers[0].status == 200 and answers[0].body == data


def test_keep_alive_after_hits_counts_from_the_last_request(server, cached):
    """A connection used every 2 s, hits and a miss, stays open past the 5 s keep-alive timeout
    (twin.cli.uvicorn_argv), and one left idle is closed 5 s after its last answer."""
    url, data, _ = cached
    where = urlsplit(server)
    with socket.create_connection((where.hostname, where.port), timeout=30) as conn:
        reader = conn.makefile("rb")

        def ask(path: str) -> str:
            conn.sendall(request(path))
            assert reader.readline().startswith(b"HTTP/1.1 200")
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = reader.read(int(headers["content-length"]))
            assert body == data
            return headers["x-tile-cache"]

        answers = []
        for second in range(0, 10, 2):
            answers.append(ask(url if second != 4 else f"{url}?fresh={time.time_ns()}"))  # one miss among hits
            last = time.monotonic()
            time.sleep(2)
        assert answers == ["hit", "hit", "miss", "hit", "hit"]
        assert reader.read(1) == b""  # closed by the server
        idle = time.monotonic() - last
    # a timer fires late on a loaded machine, never early: the upper bound (and the socket timeout of 30 s)
    # only say that it fired
    assert 4.5 <= idle <= 30, idle
