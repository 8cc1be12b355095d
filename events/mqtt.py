"""Alerts and layer changes on MQTT (docs/alerts.md has the topics):

- `twin/v1/alerts/{fid}`: an alert opened, worsened, was acknowledged or closed;
- `twin/v1/changes/{layer}/{fid}`: a feature of a layer changed;
- `twin/v1/observations/{layer}/{fid}`: a row of a series layer (water quality) was written, a change of the
  change log like the others.

The payload is the event as SSE sends it, with its id (the change id). Only public layers are published: the
broker's readers are not the API's keys. One process at a time publishes (it holds the `mqtt` row of
`events.publisher` with SKIP LOCKED), from a cursor kept in the database, and moves the cursor once the broker
has acknowledged the batch (QoS 1): after a restart publishing resumes where it stopped, so a subscriber may
see an event twice but never misses one; the id tells repeats apart. An event whose payload would pass the
broker's packet limit (a district's boundary) goes without its feature (`"feature": null, "feature_omitted":
true`; `GET /changes?after=<id - 1>&limit=1` has it): the broker would drop the connection, and the batch
would be retried for ever.

A reading of a Datastream is published once, on its SensorThings topic (`v1.1/Datastreams(id)/Observations`,
QoS 0), by the process that stored it (sensing.mqtt); so the feed's readings (events.observation_event) are not
even read here, and the cursor moves over the change log's ids only. Whoever must not miss a reading follows
SSE or a webhook, which resume from an id.
"""

import asyncio
import logging

import orjson
from fastapi import FastAPI
from sqlalchemy import text

from events import feed
from events.feed import Event
from sensing import mqtt as sensing_mqtt
from twin.broker import LIMITS

log = logging.getLogger("events.mqtt")
NAME = "mqtt"
ACK_S = 10
IDLE_S = 30
PAYLOAD_MAX = LIMITS["max_packet_size"] - 1024  # room for the packet's header, topic and properties


def topic(event: Event) -> str:
    if event.topic == "alerts":
        return f"twin/v1/alerts/{event.fid}"
    return f"twin/v1/{event.topic}/{event.layer}/{event.fid}"


def payload(event: Event) -> bytes:
    data = event.json()
    if len(data) <= PAYLOAD_MAX:
        return data
    return orjson.dumps(event.body | {"feature": None, "feature_omitted": True})


def _acknowledged(infos) -> bool:
    return all(info.wait_for_publish(ACK_S) or info.is_published() for info in infos)


async def publish_once(app: FastAPI, client) -> bool:
    """Publish the events after the cursor, if this process holds it; False when there was nothing to do."""
    access = app.state.access
    async with app.state.engine.begin() as conn:
        cursor = (await conn.execute(text("SELECT cursor FROM events.publisher WHERE name = :name "
                                          "FOR UPDATE SKIP LOCKED"), {"name": NAME})).scalar()
        if cursor is None:
            return False
        events = await feed.read(conn, cursor, 500, readings=False)
        if not events:
            return False
        infos = [client.publish(topic(e), payload(e), qos=1) for e in events if feed.visible(access, None, e.layer)]
        if not await asyncio.to_thread(_acknowledged, infos):
            raise TimeoutError("the MQTT broker did not acknowledge the events")
        await conn.execute(text("UPDATE events.publisher SET cursor = :cursor WHERE name = :name"),
                           {"name": NAME, "cursor": events[-1].id})
    return True


async def work(app: FastAPI) -> None:
    client = sensing_mqtt.publisher(app.state.settings)
    if client is None:
        return  # no broker configured
    async with app.state.engine.begin() as conn:
        await conn.execute(text("INSERT INTO events.publisher VALUES (:name, :start) ON CONFLICT DO NOTHING"),
                           {"name": NAME, "start": await feed.last_id(conn)})
    try:
        while True:
            try:
                busy = await publish_once(app, client)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the broker or the database away: the cursor stays, try again
                log.warning("publishing events on MQTT failed (%s); retrying", e)
                busy = False
                await asyncio.sleep(2)
            if not busy:
                await app.state.event_hub.wait(IDLE_S)
    finally:
        client.disconnect()
        client.loop_stop()
