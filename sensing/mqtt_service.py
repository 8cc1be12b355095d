"""What a server process does with the broker while it runs (`twin serve`'s lifespan, `twin ingest mqtt`):
publish what it stores, ingest (unless TWIN_MQTT_INGEST is off), and, when it manages the broker, keep the
broker's ACL in step with the Datastreams (channel `twin_broker`, migration 0015)."""

import asyncio
import contextlib
import logging
import threading

import psycopg
from fastapi import FastAPI

from sensing import mqtt
from sensing.mqtt_ingest import Ingest, member_slot
from twin import broker
from twin.db import database_url, sync_engine
from twin.settings import Settings
from twin.tasks import in_background

log = logging.getLogger("sensing.mqtt_service")
CHANNEL = "twin_broker"


@contextlib.contextmanager
def publishing(settings: Settings):
    """Every observation this process stores is published while the block runs (nothing without a broker)."""
    client = mqtt.publisher(settings)
    if client is None:
        yield None
        return
    stop = mqtt.publishing(client, settings)
    try:
        yield client
    finally:
        stop()
        client.disconnect()
        client.loop_stop()


def ingest_until(stopped: threading.Event, settings: Settings, *, publish: bool = False) -> None:
    """Ingest (in this thread) until `stopped` is set; `publish`: publishing what it stores itself (when nothing
    else in the process publishes: see sensing.mqtt_ingest.Ingest)."""
    with member_slot(settings.data_dir / "broker") as client_id:
        ingest = Ingest(settings, sync_engine(), client_id, publish=publish)
        watcher = threading.Thread(target=lambda: (stopped.wait(), ingest.stop()), daemon=True)
        watcher.start()
        log.info("MQTT ingest %s from %s", client_id, broker.client_url(settings))
        ingest.run()


async def _follow_datastreams(settings: Settings) -> None:
    """Rewrite the managed broker's ACL when Datastreams or layer access change (half a second's grace)."""
    url = database_url(settings).replace("postgresql+psycopg://", "postgresql://")
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                             application_name="twin-broker-acl") as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                while True:
                    await asyncio.to_thread(_refresh)
                    async for _ in conn.notifies(stop_after=1):
                        pass
                    await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("broker ACL listener lost its connection (%s); reconnecting", e)
        await asyncio.sleep(1)


def _refresh() -> None:
    with sync_engine().begin() as conn:
        broker.refresh(conn)


@contextlib.asynccontextmanager
async def running(app: FastAPI):
    settings: Settings = app.state.settings
    if broker.service_url(settings) is None:
        yield
        return
    stopped = threading.Event()

    def ingest() -> None:
        try:
            ingest_until(stopped, settings)
        except Exception:
            log.exception("MQTT ingest stopped")

    with publishing(settings):
        ingesting = asyncio.create_task(asyncio.to_thread(ingest)) if settings.mqtt_ingest else None
        follower = _follow_datastreams(settings) if broker.managed(settings) else asyncio.sleep(0)
        try:
            async with in_background(follower, "broker-acl"):
                yield
        finally:
            stopped.set()
            if ingesting is not None:
                await ingesting
