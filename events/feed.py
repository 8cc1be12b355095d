"""Events are the change log read forward: one event per change, its id the change id; and the observations
stored beside the layers, each with an event id from the same sequence.

Writers are serialised (migration 0003/0005), so change ids are allocated in commit order and a reader that
remembers the last id it saw misses nothing and repeats nothing; that is how SSE (`Last-Event-ID`), webhooks
(a cursor per subscription) and MQTT (a cursor per publisher) all resume. A change of the `alerts` layer is an
`alerts` event, one of a series layer (water-quality readings) an `observations` event, any other a `changes`
event. The body is the change as `GET /changes` shows it, with `bbox`: where it happened (before and after).

Readings of other Datastreams (a discharger's HJ 212 factors, a gate's levels: `sensing.observation`, whatever
path stored them) are `observations` events too: migration 0020 gives each stored or replaced observation an
event id under the same writer lock, so the two kinds interleave in commit order. Their layer is the one the
Thing stands for (`properties.layer`, e.g. `pollution_sources`), else `things`; their body the observation as
stored now. They are kept `OBSERVATIONS_KEPT` (changes for ever): a client resuming from further back gets the
changes and the observations still kept.
"""

from dataclasses import dataclass
from datetime import timedelta

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from layers.catalog import catalog, get_layer
from layers.changelog import change, change_columns, change_json, with_content
from twin.access import LayerAccess
from twin.auth import Principal

TOPICS = ("changes", "alerts", "observations")
ALERTS = "alerts"
THINGS = "things"  # the layer of readings of a Thing that stands for no feature
OBSERVATIONS_KEPT = timedelta(days=7)
OBSERVATIONS = text(
    "SELECT e.event_id, e.observation_id, e.phenomenon_time, o.result, o.result_quality, d.id AS datastream_id, "
    "d.name AS datastream, d.properties ->> 'hj212_code' AS factor, th.id AS thing_id, th.name AS thing, "
    "th.properties ->> 'layer' AS layer, th.properties ->> 'fid' AS fid "
    "FROM events.observation_event e JOIN sensing.datastream d ON d.id = e.datastream_id "
    "JOIN sensing.thing th ON th.id = d.thing_id "
    "LEFT JOIN sensing.observation o ON o.id = e.observation_id AND o.phenomenon_time = e.phenomenon_time "
    "WHERE e.event_id > :after ORDER BY e.event_id LIMIT :limit")


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
    return (await conn.execute(text(
        "SELECT greatest((SELECT max(change_id) FROM twin.change), "
        "(SELECT max(event_id) FROM events.observation_event), 0)"))).scalar_one()


def _observation(row) -> Event:
    layer = row.layer if row.layer and row.fid and row.fid.isdigit() else THINGS
    fid = int(row.fid) if layer != THINGS else row.thing_id
    body = {"id": row.event_id, "layer": layer, "fid": fid, "operation": "observation",
            "thing": {"@iot.id": row.thing_id, "name": row.thing},
            "datastream": {"@iot.id": row.datastream_id, "name": row.datastream, "factor": row.factor},
            "observation": {"@iot.id": row.observation_id, "phenomenonTime": row.phenomenon_time,
                            "result": row.result, "resultQuality": row.result_quality}}
    return Event(row.event_id, "observations", layer, fid, body)


async def _observations(conn: AsyncConnection, after: int, limit: int) -> list[Event]:
    return [_observation(row) for row in await conn.execute(OBSERVATIONS, {"after": after, "limit": limit})]


async def forget_old_observations(conn: AsyncConnection) -> int:
    """Delete the observation events older than OBSERVATIONS_KEPT; how many went."""
    gone = await conn.execute(text("DELETE FROM events.observation_event WHERE logged_at < now() - :kept"),
                              {"kept": OBSERVATIONS_KEPT})
    return gone.rowcount


# Where the change happened: the box around the feature before and after it, in the storage CRS (lon/lat),
# so a map refreshes only the tiles it touches.
_BOX = func.Box2D(func.ST_Collect(func.coalesce(change.c.bbox_before, change.c.bbox_after),
                                  func.coalesce(change.c.bbox_after, change.c.bbox_before)))
BBOX = [f(_BOX).label(name) for f, name in ((func.ST_XMin, "xmin"), (func.ST_YMin, "ymin"), (func.ST_XMax, "xmax"),
                                           (func.ST_YMax, "ymax"))]


def _body(row, content) -> dict:
    bbox = None if row.xmin is None else [row.xmin, row.ymin, row.xmax, row.ymax]
    return change_json(row, content) | {"bbox": bbox}


async def read(conn: AsyncConnection, after: int, limit: int, *, readings: bool = True) -> list[Event]:
    """Up to `limit` events after event id `after`, oldest first; none of archived layers (layers.registry).
    `readings=False` leaves out the readings of Datastreams (events.observation_event), whose ids then pass
    unseen: only the change log's events come, a series layer's `observations` among them."""
    rows = (await conn.execute(select(*change_columns(), *BBOX)
                               .where(change.c.change_id > after, change.c.layer.in_(sorted(catalog())))
                               .order_by(change.c.change_id).limit(limit))).all()
    changes = [Event(row.change_id, topic_of(row.layer), row.layer, row.fid, _body(row, content))
               for row, content in await with_content(conn, rows)]
    if not readings:
        return changes
    return sorted(changes + await _observations(conn, after, limit), key=lambda e: e.id)[:limit]


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
