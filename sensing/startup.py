"""What the server does for the observation store when it starts: the coming months' partitions, the station
Things and Datastreams made again from the layers, the online pollution sources', the gates' and the radiation
points' (all idempotent)."""

import logging

from fastapi import FastAPI
from sqlalchemy import text

from sensing import gates, radiation, sources, store
from sensing import water_quality as wq

log = logging.getLogger("sensing.startup")


def prepare_sync(conn) -> None:
    # several workers start at once: one prepares, the others find it done
    conn.execute(text("LOCK TABLE sensing.water_quality_parameter IN EXCLUSIVE MODE"))
    store.prepare_months(conn)
    wq.refresh(conn)
    sources.refresh(conn)
    gates.refresh(conn)
    radiation.refresh(conn)


async def prepare(app: FastAPI) -> None:
    async with app.state.engine.begin() as conn:
        await conn.run_sync(prepare_sync)
