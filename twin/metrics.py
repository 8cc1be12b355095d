"""Prometheus metrics, `GET /metrics`: HTTP requests by route and status, tile cache hits and misses, ETL runs
by outcome, and the database pools' connections.

Any room counts through the objects here (`tile_cache_hits.inc()`, `etl_runs.labels(status).inc()`).
With `uvicorn --workers N` each worker is a process with numbers of its own. When PROMETHEUS_MULTIPROC_DIR
names an empty directory (before the server starts), prometheus-client's multiprocess mode keeps the counters
in files there and `GET /metrics` from any worker sums them; the pool gauges are then those of the worker that
answered, labelled with its pid. See docs/deployment.md.
"""

import os
import time

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.pool import QueuePool

UNMATCHED = "unmatched"  # the route label of a request no route took (404s): raw paths would be unbounded

http_requests = Counter("twin_http_requests", "HTTP requests answered, by method, route template and status",
                        ["method", "route", "status"])
http_request_seconds = Histogram("twin_http_request_duration_seconds",
                                 "Seconds from a request's arrival to the end of its answer, by method and route",
                                 ["method", "route"])
tile_cache_hits = Counter("twin_tile_cache_hits", "Tiles answered from a cache (this worker's memory or Redis)")
tile_cache_misses = Counter("twin_tile_cache_misses", "Tiles rendered because no cache held them")
etl_runs = Counter("twin_etl_runs", "ETL runs ended in this process, by their recorded status", ["status"])
hj212_events = Counter("twin_hj212_events", "HJ 212 listener: packets accepted and refused (refused.<reason>), "
                       "responses sent, bytes skipped, connections opened, rejected and cut", ["event"])
mqtt_messages = Counter("twin_mqtt_messages", "MQTT ingest: messages stored, refused (refused.<reason>) and "
                        "skipped (echo: the server's own publication of a stored observation)", ["outcome"])
mqtt_published = Counter("twin_mqtt_published", "Stored observations published to MQTT subscribers (sent), and "
                         "not published because the broker was away (dropped)", ["outcome"])
hj212_connections = Gauge("twin_hj212_connections", "HJ 212 data loggers connected now", multiprocess_mode="livesum")
stream_clients = Gauge("twin_stream_clients", "SSE clients following the event stream now", multiprocess_mode="livesum")
stream_dropped = Counter("twin_stream_dropped", "SSE clients dropped for falling too far behind (they resume by id)")
webhook_events = Counter("twin_webhook_events", "Events posted to webhook subscribers, delivered or failed", ["outcome"])

router = APIRouter(tags=["operations"])


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def route_template(scope: dict) -> str:
    """The matched route's path template with the prefix it was included under (e.g. /raster/{layer}), its
    parameters named, never their values: a label value per route, and no layer name in the numbers."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return UNMATCHED
    segments, tail = scope["path"].split("/"), template.split("/")
    if len(segments) <= len(tail) or ":path}" in template:
        return template
    own = set(getattr(route, "param_convertors", {}))
    named = {str(value): f"{{{name}}}" for name, value in scope.get("path_params", {}).items() if name not in own}
    prefix = [named.get(segment, segment) for segment in segments[1:len(segments) - len(tail) + 1]]
    return "/" + "/".join(prefix) + template


class RequestMetrics:
    """Pure ASGI middleware counting every answer it sees (the status sent, 500 when the app raised)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_template(scope)
            http_requests.labels(scope["method"], route, str(status)).inc()
            http_request_seconds.labels(scope["method"], route).observe(time.perf_counter() - started)


class PoolCollector:
    """The SQLAlchemy pools' connections at the moment of a scrape, read through the pool's public API."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        pid = {"pid": str(os.getpid())} if multiprocess() else {}
        names = ["engine", *pid]
        families = {
            "size": GaugeMetricFamily("twin_db_pool_size", "Connections the pool keeps open", labels=names),
            "checkedout": GaugeMetricFamily("twin_db_pool_checked_out", "Connections in use", labels=names),
            "checkedin": GaugeMetricFamily("twin_db_pool_checked_in", "Idle connections in the pool", labels=names),
            "overflow": GaugeMetricFamily("twin_db_pool_overflow", "Connections open beyond the pool's size",
                                          labels=names),
        }
        state = self.app.state
        engines = {"primary": getattr(state, "engine", None), "read": getattr(state, "read_engine", None)}
        for name, engine in engines.items():
            if engine is None or (name == "read" and engine is engines["primary"]):
                continue  # without replicas the reads share the primary's engine: one pool, counted once
            pool = engine.pool
            if not isinstance(pool, QueuePool):
                continue
            values = {"size": pool.size(), "checkedout": pool.checkedout(), "checkedin": pool.checkedin(),
                      "overflow": max(pool.overflow(), 0)}  # negative while the pool is not yet full
            for key, family in families.items():
                family.add_metric([name, *pid.values()], values[key])
        return list(families.values())


def exposition(app: FastAPI) -> bytes:
    if multiprocess():
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    pools = CollectorRegistry()
    pools.register(PoolCollector(app))
    return generate_latest(counted) + generate_latest(pools)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format 0.0.4)."""
    return Response(exposition(request.app), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """The route, and the middleware: installed after the others, it sees the answers they make too."""
    app.include_router(router)
    app.add_middleware(RequestMetrics)
