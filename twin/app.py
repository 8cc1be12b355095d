"""The FastAPI application factory: the composition root of the HTTP server."""

from contextlib import asynccontextmanager

from fastapi import FastAPI

from layers import collections as collection_routes
from layers.catalog import catalog
from twin import errors, health
from twin.db import async_engine
from twin.logs import configure
from twin.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = async_engine(settings)
        yield
        await app.state.engine.dispose()

    app = FastAPI(
        title="OneMap Twin",
        description="一张图: the digital-twin map of Wuxi Xinwu — OGC API Features, tiles, spatial queries, history.",
        version="0.1.0",
        openapi_url="/api",
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(health.router(lambda: [s for s in catalog().values() if s.kind != "raster"]))
    app.include_router(collection_routes.router)
    return app
