"""The clock of the silence rules: a Thing that has not reported for `readings` × `expected_s` gets an alert.

Silence is the one rule a reading cannot raise. Each server process runs this timer: it opens the alerts that
are due (`events.open_silences`, taking the due states with SKIP LOCKED, so servers never open one twice),
then sleeps until the next deadline, at most IDLE_S (a reading that starts a new deadline does not wake it;
the deadline is at least one interval ahead), or until the hub hands out new events. It reads the rules'
states, one row per rule and Thing, never the observations.
"""

import asyncio
import logging

from fastapi import FastAPI
from sqlalchemy import text
from twin.tasks import failed_round

log = logging.getLogger("events.silence")
IDLE_S = 5

NEXT = text("SELECT extract(epoch FROM min(s.last_at + k.expected * k.readings) - now()) "
            "FROM events.rule_state s JOIN events.rule k ON k.id = s.rule_id "
            "WHERE k.kind = 'silence' AND k.enabled AND s.alert_fid IS NULL")


async def work(app: FastAPI) -> None:
    while True:
        try:
            async with app.state.engine.begin() as conn:
                await conn.execute(text("SELECT set_config('twin.actor', 'events.silence', true)"))
                await conn.execute(text("SELECT events.open_silences()"))
                due = (await conn.execute(NEXT)).scalar()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            failed_round(log, "opening silence alerts failed", e)
            due = IDLE_S
        await app.state.event_hub.wait(min(max(due if due is not None else IDLE_S, 0.05), IDLE_S))
