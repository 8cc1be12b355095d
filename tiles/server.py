"""Wiring tiles into the app: routers, the tile caches, renderer and fast path, the change listener."""

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from tiles import raster, routes, tilesets
from tiles.cache import TileCache
from tiles.changes import ChangeFollower
from tiles.fastpath import PublicTiles, TileFastPath
from tiles.provider import TileProvider
from tiles.render import TileRenderer
from tiles.settings import tile_settings
from tiles.shared import SharedTileCache
from twin.replicas import ReadSources
from twin.tasks import in_background

log = logging.getLogger("twin.tiles")


def install(app: FastAPI) -> None:
    settings, tiles = app.state.settings, tile_settings()
    shared = SharedTileCache(settings.redis_url, tiles.redis_ttl_s) if settings.redis_url else None
    provider = TileProvider(TileCache(int(tiles.cache_mb * 2**20)), TileRenderer(tiles),
                            shared, tiles)
    app.state.tile_provider = provider
    routes.install(app)
    app.include_router(tilesets.router)
    raster.install(app)


def in_front(served, app: FastAPI) -> TileFastPath:
    """The ASGI app to serve: `served` (the app, or what already wraps it) behind the tile fast path, which
    answers public tiles before any of the framework's own layers (its error, telemetry and body-limit
    middleware), the app's middleware or its router run. Call last."""
    app.state.public_tiles = PublicTiles(app.state.access, app.state.settings.cors_origins,
                                         app.state.tile_provider, app.state.settings)
    return TileFastPath(served, app.state.public_tiles)


@contextlib.asynccontextmanager
async def running(app: FastAPI):
    """For the app's life: the renderer's connection pool, and the change listener (the caches serve
    once it is connected)."""
    provider: TileProvider = app.state.tile_provider
    settings = app.state.settings

    follower = ChangeFollower(ReadSources(settings).tile_sources(), provider.memory, provider.shared, tile_settings(),
                              settings, provider.renderer.switched)
    await provider.renderer.open(settings, lambda: follower.url)
    try:
        async with in_background(follower.run(), "tile-change-listener"):
            try:
                await asyncio.wait_for(follower.connected.wait(), timeout=10)
            except TimeoutError:
                log.warning("tile change listener not connected yet; tiles are served uncached until it is")
            app.state.tile_follower = follower
            yield
    finally:
        provider.renderer.close()
        if provider.shared:
            await provider.shared.close()
