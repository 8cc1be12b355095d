"""Events are the change log read forward: one event per change, its id the change id.

Writers are serialised (migration 0003/0005), so change ids are allocated in commit order and a reader that
remembers the last id it saw misses nothing and repeats nothing; that is how SSE (`Last-Event-ID`), webhooks
(a cursor per subscription) and MQTT (a cursor per publisher) all resume. A change of the `alerts` layer is an
`alerts` event, one of a series layer (water-quality readings) an `observations` event, any other a `changes`
event. The body is the change as `GET /changes` shows it.
"""

from dataclasses import dataclass

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from layers.catalog import get_layer
from layers.changelog import change, change_columns, change_json, with_content
from twin.access import LayerAccess
from twin.auth import Principal

TOPICS = ("changes", "alerts", "observations")
ALERTS = "alerts"


@dataclass(frozen=True)
class Event:
    id: int
    topic: str
    layer: str
    fid: int
    body: dict

    def json(self) -> bytes:
        return orjson.dumps(self.body)


def topic_of(layer: str) -> str:
    if layer == ALERTS:
        return "alerts"
    spec = get_layer(layer)
    return "observations" if spec is not None and spec.kind == "series" else "changes"


async def last_id(conn: AsyncConnection) -> int:
    return (await conn.execute(select(func.coalesce(func.max(change.c.change_id), 0)))).scalar_one()


async def read(conn: AsyncConnection, after: int, limit: int) -> list[Event]:
    """Up to `limit` events after change id `after`, oldest first."""
    rows = (await conn.execute(select(*change_columns()).where(change.c.change_id > after)
                               .order_by(change.c.change_id).limit(limit))).all()
    return [Event(row.change_id, topic_of(row.layer), row.layer, row.fid, change_json(row, content))
            for row, content in await with_content(conn, rows)]


@dataclass(frozen=True)
class Interest:
    """What a listener asked for and who it is: topics, layers (None: all) and the key it came with."""
    topics: frozenset[str]
    layers: frozenset[str] | None
    principal: Principal | None

    def wants(self, event: Event, access: LayerAccess) -> bool:
        if event.topic not in self.topics or (self.layers is not None and event.layer not in self.layers):
            return False
        return visible(access, self.principal, event.layer)


def visible(access: LayerAccess, principal: Principal | None, layer: str) -> bool:
    """Whether `principal` (None: no key) may see `layer`'s changes, as the read paths decide (twin.access)."""
    if layer not in access.private():
        return True
    return principal is not None and access.may_read(principal, layer)
