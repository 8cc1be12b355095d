"""The FastAPI application factory: the composition root of the HTTP server."""

import gc
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp

from layers import collections as collection_routes
from layers import extents
from layers import diff as diff_routes, edits as edit_routes, history as history_routes, revert as revert_routes
from layers import items as item_routes
from layers import openapi as ogc_openapi
from layers import export as export_routes
from layers import queries as query_routes
from layers import following as layer_catalog, registration
from layers.catalog import catalog
from tiles import server as tile_server
from sensing import hj212_ingest, mqtt_service
from sensing import series as series_routes
from sensing import startup as sensing_startup
from sensing.sta import routes as sta_routes
from etl import routes as etl_routes
from events import service as event_service
from cases import open311 as open311_routes, routes as case_routes, routing as case_routing
from cases import statistics as case_statistics
from cases import from_alerts as case_alerts
from twin import access, admin, cors, errors, health, limits, metrics
from layers import styles as style_routes
from twin import viewer
from twin.db import async_engine
from twin.replicas import read_engine
from twin.tasks import in_background
from twin.logs import configure
from twin.settings import Settings, get_settings


def feature_layers() -> list:
    return [s for s in catalog().values() if s.kind != "raster"]


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or get_settings()
    configure(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = async_engine(settings)
        app.state.read_engine = read_engine(settings, app.state.engine)  # reads that may lag: twin.replicas
        await layer_catalog.load(app)  # the registered layers (layers.registry), before the first request
        await sensing_startup.prepare(app)  # partitions ahead, station Things (sensing.startup)
        await case_routing.load(app.state.engine)  # the responsibility table, when its file changed
        async with tile_server.running(app) as state, access.following(app), layer_catalog.following(app), \
                hj212_ingest.listening(app), \
                mqtt_service.running(app), \
                event_service.running(app), \
                in_background(case_alerts.follow(app), "cases-from-alerts"), \
                in_background(extents.warm(app, feature_layers()), "extents"):
            # start-up's objects live as long as the server: the full collections that a request of 10,000 rows
            # sets off need not scan them (a tenth of a second each; docs/benchmarks.md, issue 19)
            gc.freeze()
            yield state
            gc.unfreeze()
            for update in list(app.state.extent_updates.values()):  # layers.extents
                update.cancel()
        for engine in {app.state.engine, app.state.read_engine}:
            await engine.dispose()

    app = FastAPI(
        title="OneMap Twin",
        description="一张图: the digital-twin map of Wuxi Xinwu — OGC API Features, tiles, spatial queries, history.",
        version="0.1.0",
        openapi_url="/api",
        docs_url="/docs",
        lifespan=lifespan,
        dependencies=[Depends(access.layer_in_path)],  # private layers: twin.access
        # no OpenTelemetry here: FastAPI would otherwise look for configured providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.extents, app.state.extent_updates = {}, {}  # layers.extents
    access.install(app, catalog().values())
    tile_server.install(app)  # first: tiles are most of the requests, and routes are matched in order
    app.include_router(health.router(feature_layers))
    app.include_router(collection_routes.router)
    for history_router in (history_routes.router, diff_routes.router, edit_routes.router, revert_routes.router):
        app.include_router(history_router)
    app.include_router(item_routes.router)
    app.include_router(export_routes.router)
    app.include_router(series_routes.router)
    app.include_router(sta_routes.router)  # SensorThings /sta/v1.1
    app.include_router(query_routes.router)
    app.include_router(style_routes.router)
    app.include_router(admin.router)
    app.include_router(registration.router)
    app.include_router(etl_routes.router)
    event_service.install(app)  # /stream, /alerts, /webhooks
    for case_router in (case_statistics.router, case_routes.router, open311_routes.router):  # /cases/statistics first
        app.include_router(case_router)
    viewer.install(app)
    limits.install(app, upload_bytes=settings.max_upload_mb << 20)  # body sizes and speeds, before parsing
    errors.install(app)  # its URL check is outside every middleware but CORS, metrics and the tile fast path
    cors.install(app)  # outside the rest, so refusals and errors carry its headers too
    metrics.install(app)  # counts every answer above, CORS preflights included; not the fast path's tile hits
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            ogc_openapi.ogc_names(schema)  # {layer} documented as OGC's {collectionId}
            errors.document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi
    # last: public tiles (the most asked, so first) and event streams are answered before the app's middleware
    return tile_server.in_front(event_service.in_front(app, app), app)
