"""HJ 212 packets into the observation store: the listener `twin serve` runs on TWIN_HJ212_PORT, and its sink.

A packet's device number (MN) names a Thing (`properties.hj212_mn`), each factor code one of its Datastreams
(`properties.hj212_code`). A real-time packet (CN=2011) gives each factor's `-Rtd`; a minute, hourly or daily
one (2051, 2061, 2031) its `-Avg` (or `-Cou` for a total with no average), stamped with the packet's DataTime;
the factor's `-Flag` is the observation's resultQuality. A packet from an unknown device, or naming a factor
its Thing has no Datastream for, is refused whole: nothing of it is stored.
"""

from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from sensing import store
from sensing.hj212 import Packet, UnknownDevice, UnknownFactor
from sensing.hj212_listener import Hj212Listener, Sink

VALUE_FIELDS = {"2011": ("Rtd",), "2051": ("Avg", "Cou"), "2061": ("Avg", "Cou"), "2031": ("Avg", "Cou")}


def observations(packet: Packet, streams: dict[str, int]) -> list[store.ObservationRow]:
    """The packet's readings as observations of the Datastreams `streams` (factor code → id)."""
    chosen: dict[str, tuple[int, object]] = {}  # factor → (rank of its field, reading)
    for reading in packet.readings:
        fields = VALUE_FIELDS[packet.cn]
        if reading.field not in fields:
            continue
        if reading.factor not in streams:
            raise UnknownFactor(packet.mn, reading.factor)
        rank = fields.index(reading.field)
        if reading.factor not in chosen or rank < chosen[reading.factor][0]:
            chosen[reading.factor] = (rank, reading)
    return [store.ObservationRow(streams[factor], packet.data_time, reading.value, reading.flag)
            for factor, (_, reading) in chosen.items()]


def sink(engine: AsyncEngine) -> Sink:
    async def stored(packet: Packet) -> None:
        async with engine.connect() as conn:
            streams = await store.device_streams(conn, packet.mn)
            if streams is None:
                raise UnknownDevice(packet.mn)
            rows = observations(packet, streams)
            if rows:
                await store.add_observations(conn, rows, actor=f"hj212:{packet.mn}")
    return stored


@asynccontextmanager
async def listening(app: FastAPI):
    """The HJ 212 listener while the app runs, unless TWIN_HJ212_PORT is 0; its counters in app.state.hj212."""
    settings = app.state.settings
    if not settings.hj212_port:
        app.state.hj212 = None
        yield
        return
    listener = Hj212Listener(settings.hj212_host, settings.hj212_port, sink(app.state.engine))
    await listener.start()
    app.state.hj212 = listener
    try:
        yield
    finally:
        await listener.stop()
