"""The events room in a server process: its routes, and for the app's life the rules loaded from the spec
files, the event hub, the webhook workers, the upstream-context worker, the silence timer, the MQTT
publisher and the hourly clearing of old observation events."""

import asyncio
import contextlib
import logging
import signal

from fastapi import FastAPI

from events import alerts, context, delivery, feed, mqtt, rules, silence, stream, webhooks
from events.hub import Hub
from events.stream_front import StreamFront
from twin.db import database_url
from twin.tasks import failed_round, in_background

log = logging.getLogger("events.service")
FORGET_EVERY_S = 3600


def install(app: FastAPI) -> None:
    for router in (stream.router, alerts.router, webhooks.router):
        app.include_router(router)


def in_front(served, app: FastAPI) -> StreamFront:
    """`served` (the app, or what already wraps it) behind the front that opens event streams before the app's
    middleware (events.stream_front)."""
    return StreamFront(served, app)


@contextlib.asynccontextmanager
async def running(app: FastAPI):
    settings = app.state.settings
    async with app.state.engine.begin() as conn:
        await conn.run_sync(rules.load_specs, settings.alert_replay_hours)
    url = database_url(settings).replace("postgresql+psycopg://", "postgresql://")
    hub = app.state.event_hub = Hub(app.state.engine, app.state.access, url, settings.stream_queue)
    async with app.state.engine.connect() as conn:
        hub.position = await feed.last_id(conn)
    async with contextlib.AsyncExitStack() as tasks:
        await tasks.enter_async_context(in_background(hub.run(), "event-hub"))
        await tasks.enter_async_context(in_background(hub.beating(settings.stream_heartbeat_s), "event-heartbeat"))
        for number in range(settings.webhook_workers):
            await tasks.enter_async_context(in_background(delivery.work(app, number), f"webhooks-{number}"))
        await tasks.enter_async_context(in_background(context.work(app), "alert-context"))
        await tasks.enter_async_context(in_background(silence.work(app), "alert-silence"))
        await tasks.enter_async_context(in_background(mqtt.work(app), "events-mqtt"))
        await tasks.enter_async_context(in_background(forgetting(app), "observation-events"))
        with closing_streams_on_stop(hub):
            yield


async def forgetting(app: FastAPI) -> None:
    """Every server clears the observation events past their keeping (feed.OBSERVATIONS_KEPT), once an hour."""
    while True:
        try:
            async with app.state.engine.begin() as conn:
                await feed.forget_old_observations(conn)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            failed_round(log, "clearing old observation events failed", e)
        await asyncio.sleep(FORGET_EVERY_S)


@contextlib.contextmanager
def closing_streams_on_stop(hub: Hub):
    """SIGTERM or SIGINT ends the event streams at once, then goes on to the server's own handler: a graceful
    shutdown waits for open responses, and an event stream never ends by itself."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    loop = asyncio.get_running_loop()

    def stopping(number, frame):
        loop.call_soon_threadsafe(hub.close)
        if callable(previous[number]):
            previous[number](number, frame)
        else:  # the default action (or ignore), as if this handler had not been there
            signal.signal(number, previous[number])
            signal.raise_signal(number)

    try:
        for number in previous:
            signal.signal(number, stopping)
    except ValueError:  # not the main thread (an app run in a test client's thread): nothing to chain
        previous = {}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
