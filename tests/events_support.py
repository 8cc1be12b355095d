"""For the events tests: a server with quick event settings, an SSE client in a thread, a webhook receiver."""

import hashlib
import hmac
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.server_support import free_port, logged_server

QUICK = {"stream_heartbeat_s": 1, "webhook_backoff_s": 0.2, "webhook_backoff_max_s": 0.5}


@contextmanager
def events_server(database_url, data_dir, name: str, **settings):
    with logged_server(database_url, data_dir, data_dir / f"{name}.log", **(QUICK | settings)) as base:
        yield base


def bearer(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


class SseClient:
    """`GET /stream` read in a thread: `events` fills with (id, event, data) as they arrive."""

    def __init__(self, base: str, params: dict | None = None, headers: dict | None = None):
        self.events: list[tuple[int, str, dict]] = []
        self.heartbeats = 0
        self.heard: list[float] = []  # when each heartbeat or event arrived (time.monotonic)
        self.status: int | None = None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base, params or {}, headers or {}), daemon=True)
        self._thread.start()

    def _read(self, base, params, headers):
        fields: dict[str, str] = {}
        try:
            with httpx.stream("GET", f"{base}/stream", params=params, headers=headers,
                              timeout=httpx.Timeout(10, read=5)) as answer:
                self.status = answer.status_code
                for line in answer.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.heartbeats += 1
                        self.heard.append(time.monotonic())
                    elif line == "":
                        if "data" in fields:
                            self.events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                            self.heard.append(time.monotonic())
                        fields = {}
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def ids(self) -> list[int]:
        return [e[0] for e in self.events]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=10)


class Receiver:
    """A webhook receiver on a loopback port: records each delivery's events, checks its signature; `up` False
    answers 503."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.deliveries: list[dict] = []
        self.bad_signatures = 0
        self.secret: str | None = None
        self.up = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not receiver.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                if receiver.secret is not None:
                    expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                    receiver.bad_signatures += not hmac.compare_digest(expected, self.headers["X-Twin-Signature"])
                receiver.deliveries.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def event_ids(self) -> list[int]:
        return [e["id"] for d in self.deliveries for e in d["events"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
