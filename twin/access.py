"""Who may read what: every layer is public unless it is private, and a private layer is read with a key only.

A layer is private when its spec says `private = true`, or when an admin switched it
(`PUT /admin/layers/{layer}/access`, `twin layers private NAME --on/--off`); a switch is a row of
`twin.layer_access` (migration 0006) and overrides the spec. A private layer may be read by an
admin key, by a key of the department that owns it (its spec's `department`) and by a key that
lists it (one that may write it). Without a key such a read is a 401, with a key that may not
read it a 403, each with a JSON reason, and each refusal is logged with the client's address.

Each server process keeps the switches in memory and follows them on channel `twin_access` on a
connection of its own; while that connection is down it reads them from the database on every
request instead, so a switch is never missed. Owners and privacy defaults follow the layer catalog as
layers.following installs it (`LayerAccess.follow`).

The decisions are all made here; the routes ask in one of three ways:
- `layer_in_path`, an app-wide dependency: every route whose path has a `{layer}` (a collection, its
  items, queryables, history, changes, diff, export, tiles, TileJSON, raster) answers only those
  who may read it;
- `hidden_layers`: the private layers to leave out of answers that span layers (the catalog, the
  change feed, the composite tile and style, a query's default layers);
- `require_read`: layers named anywhere else (a query's body, the series' fixed layers).
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from fastapi import FastAPI, Request
from sqlalchemy import Boolean, Column, DateTime, MetaData, Table, Text, func, select
from sqlalchemy.dialects.postgresql import insert

from twin.auth import Principal, authenticate
from twin.db import database_url
from twin.errors import ApiError
from twin.notices import follow
from twin.tasks import in_background

log = logging.getLogger("twin.access")
CHANNEL = "twin_access"
POLL_S = 30  # the switches are reloaded this often even without a notice

layer_access = Table("layer_access", MetaData(), Column("layer", Text, primary_key=True), Column("private", Boolean),
                     Column("changed_at", DateTime(timezone=True)), Column("changed_by", Text), schema="twin")


@dataclass
class LayerAccess:
    defaults: dict[str, bool]  # layer → private by its spec
    owners: dict[str, str]  # layer → the department that owns it
    switched: dict[str, bool] = field(default_factory=dict)  # layer → private, as an admin set it; replaced, never changed in place
    live: bool = False  # `switched` follows the database (the listener is connected)
    _private: tuple[dict, frozenset[str]] | None = field(default=None, repr=False)
    # reads of the switches run one at a time, so an older read never replaces a newer one
    loading: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def private(self, switched: dict[str, bool] | None = None) -> frozenset[str]:
        if switched is None:  # asked on every tile hit: worked out once per state of the switches
            if self._private is None or self._private[0] is not self.switched:
                self._private = (self.switched, self.private(self.switched))
            return self._private[1]
        return frozenset(layer for layer, default in self.defaults.items() if switched.get(layer, default))

    def follow(self, specs: Iterable) -> None:
        """Owners and privacy defaults from the catalog's specs (each with `.id`, `.private` and `.department`)."""
        specs = list(specs)
        self.defaults, self.owners = {s.id: s.private for s in specs}, {s.id: s.department for s in specs}
        self._private = None

    def may_read(self, principal: Principal, layer: str) -> bool:
        return principal.is_admin or principal.department == self.owners.get(layer) or layer in principal.layers


def install(app: FastAPI, specs: Iterable) -> None:
    """`specs`: the catalog's layer specs (each with `.id`, `.private` and `.department`)."""
    app.state.access = LayerAccess({}, {})
    app.state.access.follow(specs)


def switch_statement(layer: str, private: bool, actor: str):
    """Make `layer` private or public (the HTTP admin route and the CLI both use it)."""
    row = insert(layer_access).values(layer=layer, private=private, changed_by=actor)
    return row.on_conflict_do_update(index_elements=[layer_access.c.layer], set_={
        "private": row.excluded.private, "changed_by": row.excluded.changed_by, "changed_at": func.now()})


async def private_layers(app: FastAPI) -> frozenset[str]:
    access: LayerAccess = app.state.access
    if access.live:
        return access.private()
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(select(layer_access.c.layer, layer_access.c.private))
        return access.private({layer: private for layer, private in rows})


async def _principal(request: Request) -> Principal:
    known = getattr(request.state, "reader", None)
    if known is None:
        known = request.state.reader = await authenticate(request)
    return known


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def require_read(request: Request, layers: Iterable[str], where: str) -> None:
    """Nothing when the caller may read every one of `layers`; else the 401 or 403 that says why."""
    access: LayerAccess = request.app.state.access
    private = await private_layers(request.app)
    closed = [layer for layer in dict.fromkeys(layers) if layer in private]
    if not closed:
        return
    if not request.headers.get("authorization"):
        log.warning("refused a read of private layer %s from %s: no key, on %s %s", closed[0], _client(request),
                    request.method, request.url.path)
        raise ApiError(401, "private_layer", f"Layer '{closed[0]}' is private: reading it needs an API key of "
                       f"{access.owners[closed[0]]} or an admin key, sent as 'Authorization: Bearer <key>'.",
                       where=where, headers={"WWW-Authenticate": "Bearer"})
    principal = await _principal(request)
    refused = [layer for layer in closed if not access.may_read(principal, layer)]
    if refused:
        log.warning("refused a read of private layer %s from %s: key %s of %s may not read it, on %s %s",
                    refused[0], _client(request), principal.prefix, principal.department, request.method,
                    request.url.path)
        raise ApiError(403, "forbidden_layer", f"Layer '{refused[0]}' is private to {access.owners[refused[0]]}: "
                       f"the key of {principal.department} may not read it.", where=where)


async def hidden_layers(request: Request) -> frozenset[str]:
    """The private layers the caller may not read (all of them without a key); a bad key is a 401."""
    private = await private_layers(request.app)
    if not private or not request.headers.get("authorization"):
        return private
    access: LayerAccess = request.app.state.access
    principal = await _principal(request)
    return frozenset(layer for layer in private if not access.may_read(principal, layer))


async def layer_in_path(request: Request) -> None:
    """App-wide dependency: a route whose path names a layer answers only callers who may read it."""
    layer = request.path_params.get("layer")
    if isinstance(layer, str) and layer in request.app.state.access.defaults:
        await require_read(request, [layer], "path.layer")


async def _load(conn: psycopg.AsyncConnection, access: LayerAccess) -> None:
    async with access.loading:
        rows = await (await conn.execute("SELECT layer, private FROM twin.layer_access")).fetchall()
        access.switched = dict(rows)


async def reload(app: FastAPI) -> None:
    """Read the switches now (after a switch made by this process: it holds at once here)."""
    access: LayerAccess = app.state.access
    async with access.loading:
        async with app.state.engine.connect() as conn:
            rows = (await conn.execute(select(layer_access.c.layer, layer_access.c.private))).all()
        access.switched = dict(rows)


@contextlib.asynccontextmanager
async def following(app: FastAPI):
    """For the app's life: keep `app.state.access` in step with `twin.layer_access`; while the listener is down,
    the switches are read per request (`live` False), so a switch is never missed."""
    access: LayerAccess = app.state.access
    url = database_url(app.state.settings).replace("postgresql+psycopg://", "postgresql://")

    def live(connected: bool) -> None:
        access.live = connected

    try:
        async with in_background(follow(url, CHANNEL, "twin-access-listener", lambda conn: _load(conn, access), live,
                                        POLL_S), "layer-access-listener"):
            yield
    finally:
        access.live = False
