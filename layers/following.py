"""Each server process follows the layer catalog (layers.registry): it reads `twin.layer` as it starts and again on
each notice of channel `twin_layers` (sent at the commit of every registration, change, archive or restore), on a
connection of its own (twin.notices). Installing a new catalog also gives twin.access the owners and privacy
defaults, and drops the cached tiles of the layers whose spec changed, came or went."""

import contextlib
import logging
from datetime import datetime, timezone

import psycopg
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from layers import registry
from layers.catalog import catalog
from twin.db import database_url
from twin.notices import follow
from twin.tasks import in_background

log = logging.getLogger("twin.layers")
CHANNEL = "twin_layers"
WORLD = (-180.0, -90.0, 180.0, 90.0)


async def _installed(app: FastAPI, changed: dict) -> None:
    app.state.access.follow(catalog().values())
    provider = getattr(app.state, "tile_provider", None)
    if provider is None or not changed:
        return
    now = datetime.now(timezone.utc)
    for layer in changed:
        provider.memory.evict_area(layer, WORLD, now)
    if provider.shared is not None:
        await provider.shared.evict([(layer, WORLD, now) for layer in changed])


async def _load(conn: psycopg.AsyncConnection, app: FastAPI) -> None:
    await _installed(app, registry.install_rows(await (await conn.execute(registry.CATALOG)).fetchall()))


async def reload(app: FastAPI) -> None:
    """Read the catalog now (after a change made by this process: it holds at once here)."""
    async with app.state.engine.connect() as conn:
        rows = (await conn.execute(text(registry.CATALOG))).all()
    await _installed(app, registry.install_rows(rows))


async def load(app: FastAPI) -> None:
    """As the server starts: the database's catalog; the shipped one while the database cannot be read (the
    follower installs it once it can)."""
    try:
        await reload(app)
    except (OSError, DBAPIError) as e:
        log.warning("layer catalog not read at start (%s); serving the shipped layers until it is", e)


@contextlib.asynccontextmanager
async def following(app: FastAPI):
    url = database_url(app.state.settings).replace("postgresql+psycopg://", "postgresql://")
    async with in_background(follow(url, CHANNEL, "twin-layers-listener", lambda conn: _load(conn, app)),
                             "layer-catalog-listener"):
        yield
