"""Wiring tiles into the app: routers, the tile cache and its fast path, the change listener."""

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from tiles import raster, routes, tilesets
from tiles.cache import TileCache
from tiles.changes import ChangeFollower
from tiles.fastpath import TileFastPath
from tiles.settings import tile_settings
from twin.db import database_url

log = logging.getLogger("twin.tiles")


def install(app: FastAPI) -> None:
    cache = TileCache(int(tile_settings().cache_mb * 2**20))
    app.state.tile_cache = cache
    app.include_router(tilesets.router)
    app.include_router(routes.router)
    raster.install(app)
    app.add_middleware(TileFastPath, cache=cache)


@contextlib.asynccontextmanager
async def following_changes(app: FastAPI):
    """Run the change listener for the app's life; the cache serves once it is connected."""
    url = database_url(app.state.settings).replace("postgresql+psycopg://", "postgresql://")
    follower = ChangeFollower(url, app.state.tile_cache, tile_settings())
    task = asyncio.create_task(follower.run(), name="tile-change-listener")
    try:
        await asyncio.wait_for(follower.connected.wait(), timeout=10)
    except TimeoutError:
        log.warning("tile change listener not connected yet; tiles are served uncached until it is")
    app.state.tile_follower = follower
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
