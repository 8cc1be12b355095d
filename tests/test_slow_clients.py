"""Slow clients: a bare `twin serve` (uvicorn) cuts off slow bodies (twin.limits.BodyLimit) and idle keep-alive
connections, and a slow client holds up nobody else; the request line and headers are bounded by the reverse
proxy in front (docs/deployment.md), checked here with the nginx configuration that page gives."""

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server_support import free_port
from tests.tile_support import wait_for
from twin.limits import BODY_GRACE_S

OPENINGS = {"headers": b"GET /health HTTP/1.1\r\nHost: twin\r\nX-Slow: ",
            "body": b"POST /query/nearest HTTP/1.1\r\nHost: twin\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n{",
            "silent": b""}
PROXY_HEADER_TIMEOUT_S = 10  # client_header_timeout in docs/deployment.md's configuration


def _slow_client(address, kind: str, results: list, started: float, stop: threading.Event) -> None:
    """Send the opening of `kind`, then one more byte a second (none when silent) until the server answers or
    closes, or `stop` is set; record (kind, seconds, what came back, whether the server closed)."""
    with socket.create_connection(address) as s:
        s.sendall(OPENINGS[kind])
        s.setblocking(False)
        answer, closed = b"", False
        while not stop.is_set():
            try:
                chunk = s.recv(4096)
                answer += chunk
                if not chunk or answer.endswith(b"}"):
                    closed = not chunk
                    break
            except BlockingIOError:
                if kind != "silent":
                    try:
                        s.send(b"a")
                    except OSError:
                        closed = True
                        break
                time.sleep(1)
            except OSError:
                closed = True
                break
        results.append((kind, time.monotonic() - started, answer, closed))


def _address(base: str) -> tuple[str, int]:
    return base.split("//")[1].split(":")[0], int(base.rsplit(":", 1)[1])


def _slow_clients(base: str, kinds: list[str], check_others, wait_s: float) -> list:
    """Open a slow client of each of `kinds` against `base`; call `check_others()` five times while they are
    open; after `wait_s` stop those still going; their results."""
    results: list = []
    started, stop = time.monotonic(), threading.Event()
    threads = [threading.Thread(target=_slow_client, args=(_address(base), k, results, started, stop)) for k in kinds]
    for t in threads:
        t.start()
    time.sleep(1)
    for _ in range(5):
        asked = time.monotonic()
        check_others()
        assert time.monotonic() - asked < 5
    while time.monotonic() - started < wait_s and any(t.is_alive() for t in threads):
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
    assert sorted(k for k, *_ in results) == sorted(kinds)
    return results


def test_slow_bodies_are_cut_off_and_slow_clients_block_nobody(server, http):
    def others():
        response = http.get("/collections/rivers/items", params={"limit": 2})
        assert response.status_code == 200 and len(response.json()["features"]) == 2

    kinds = ["headers"] * 7 + ["body"] * 7 + ["silent"] * 6
    bound = BODY_GRACE_S + 5
    results = _slow_clients(server, kinds, others, bound + 3)
    for kind, seconds, answer, closed in results:
        if kind == "body":
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408") and seconds < bound, (kind, seconds, answer[:200])
            assert json.loads(body)["code"] == "body_too_slow"
        else:  # held until the client gives up: this is what the proxy is for (the test below)
            assert answer == b"" and not closed, (kind, seconds, answer[:200])
    assert http.get("/health").status_code == 200


def _proxy_configuration(upstream: str, port: int) -> str:
    """The nginx configuration of docs/deployment.md, pointed at `upstream` and listening on `port`."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
    block = re.search(r"```nginx\n(.*?)```", text, re.S).group(1)
    assert "server 127.0.0.1:8000;" in block and "listen 80;" in block
    return block.replace("server 127.0.0.1:8000;", f"server {upstream};").replace("listen 80;",
                                                                                f"listen 127.0.0.1:{port};")


@pytest.fixture
def proxy(server, tmp_path):
    """nginx in front of the server, configured as docs/deployment.md says."""
    nginx = "/usr/sbin/nginx"  # installed by `make setup` (install/debian.py)
    assert Path(nginx).exists(), "Debian's nginx is missing: run make setup"
    port = free_port()
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                         "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{ worker_connections 256; }}\nhttp {{ access_log off; {temp}\n"
        f"{_proxy_configuration(server.split('//')[1], port)}}}\n")
    process = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _answers(base), 10), (tmp_path / "error.log").read_text()
        yield base
    finally:
        process.terminate()
        process.wait(10)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_proxy_cuts_off_slow_and_oversized_headers(proxy):
    with httpx.Client(base_url=proxy, timeout=10) as client:
        tile = client.get("/collections/roads/tiles/WebMercatorQuad/12/1669/3418")
        assert tile.status_code in (200, 204) and tile.headers["x-tile-cache"] in ("hit", "miss")
        same = client.get(tile.url.path, headers={"If-None-Match": tile.headers["etag"]})
        assert same.status_code == 304 and same.headers["x-tile-cache"] == "hit"

        def others():
            assert client.get("/collections/rivers/items", params={"limit": 2}).status_code == 200

        results = _slow_clients(proxy, ["headers"] * 7 + ["silent"] * 6, others, PROXY_HEADER_TIMEOUT_S + 10)
        for kind, seconds, answer, closed in results:
            assert closed and PROXY_HEADER_TIMEOUT_S - 1 < seconds < PROXY_HEADER_TIMEOUT_S + 5, (kind, seconds)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), (kind, answer[:200])
        for headers in ({"X-Big": "a" * 17 * 1024}, {f"X-Part-{i}": "a" * 15 * 1024 for i in range(5)}):
            refused = client.get("/health", headers=headers)
            assert refused.status_code == 400, refused.text[:200]  # nginx: "Request Header Or Cookie Too Large"
        assert client.get("/health").status_code == 200
