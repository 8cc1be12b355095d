"""The upstream context of a water alert, computed when it opens and kept in the alert (`context`, JSON).

For an alert at a monitoring station: the river reaches upstream of it (layers.network's trace, within
`alert_trace_m` along the rivers), the pollution sources near those reaches, and for each source that reports
online (a Thing whose `properties.credit_code` is the source's) its readings from `alert_context_hours` before
the alert's first offending reading to its last, per factor, with how many were over the permit limit.
Suspects are ranked: sources with abnormal readings first, then sources that report online, then the rest;
within each, nearer along the rivers first. Each says why, with the travel time at `alert_flow_m_s`.
The drainage network (layers/drainage*, pgRouting) will add outfalls and pipes: `upstream` is where its trace
joins the river trace.

A worker in every server process fills in alerts that have no context yet, woken by the event hub; so an
alert opened by any path, while any server was down, gets its context. The context is computed without a lock
and stored only where there is none yet: a row lock held across the trace, then the change log's writer lock,
would deadlock with ingest, which takes them the other way round. Two servers may both compute one; one stores.
"""

import asyncio
import logging
from datetime import timedelta

import orjson
import shapely
from fastapi import FastAPI
from sqlalchemy import text

from layers import network
from layers.crs import parse as parse_crs
from layers.query_bodies import Trace
from layers.query_geometry import bound
from twin.tasks import failed_round

log = logging.getLogger("events.context")
IDLE_S = 30

PENDING = text("SELECT fid, ST_AsBinary(geom) AS geom, first_at, last_at FROM layers.alerts "
               "WHERE context IS NULL AND station_code IS NOT NULL AND geom IS NOT NULL AND state <> 'closed' "
               "ORDER BY fid LIMIT 1")
READINGS = text(
    "SELECT th.name AS thing, d.properties ->> 'hj212_code' AS factor, d.name AS datastream, count(o.id) AS readings, "
    "min(o.result) AS min, max(o.result) AS max, "
    "(th.properties -> 'permit_limits' ->> (d.properties ->> 'hj212_code'))::float8 AS permit_limit, "
    "count(o.id) FILTER (WHERE o.result > (th.properties -> 'permit_limits' ->> (d.properties ->> 'hj212_code'))"
    "::float8) AS over_limit "
    "FROM sensing.thing th JOIN sensing.datastream d ON d.thing_id = th.id "
    "LEFT JOIN sensing.observation o ON o.datastream_id = d.id AND o.phenomenon_time BETWEEN :start AND :end "
    "WHERE th.properties ->> 'credit_code' = :code GROUP BY th.id, d.id ORDER BY th.name, d.name")
CRS84 = parse_crs("CRS84", "context")


async def upstream(conn, point, settings, hidden: frozenset[str]) -> dict | None:
    query = Trace(point=[point.x, point.y], direction="upstream", distance=settings.alert_trace_m,
                  geometries=False)
    return await network.trace(conn, bound(point), query, CRS84, hidden)


def _suspect(source: dict, readings: list, flow_m_s: float) -> dict:
    props = source["properties"]
    abnormal = sum(r["over_limit"] for r in readings)
    hours = props["along_m"] / flow_m_s / 3600
    why = [f"{abnormal} reading(s) over the permit limit in the window" if abnormal
           else ("reports online, nothing over its limit in the window" if readings else "no online monitoring"),
           f"{props['along_m']:.0f} m upstream along the rivers ({props['distance_m']:.0f} m from the river)",
           f"about {hours:.1f} h of travel at {flow_m_s:g} m/s"]
    return {"fid": source["id"], "credit_code": props["credit_code"], "name": props["name"],
            "along_m": round(props["along_m"], 1), "distance_m": round(props["distance_m"], 1),
            "travel_h": round(hours, 2), "abnormal_readings": abnormal, "online": bool(readings),
            "readings": readings, "why": "; ".join(why)}


async def context_of(conn, alert, settings, hidden: frozenset[str]) -> dict:
    point = shapely.from_wkb(bytes(alert.geom))
    traced = await upstream(conn, point, settings, hidden)
    if traced is None:
        return {"reaches": [], "suspects": [], "note": "no river passes near the station"}
    start = alert.first_at - timedelta(hours=settings.alert_context_hours)
    suspects = []
    for source in traced.get("pollution_sources", {}).get("features", []):
        rows = (await conn.execute(READINGS, {"code": source["properties"]["credit_code"], "start": start,
                                              "end": alert.last_at})).all()
        suspects.append(_suspect(source, [dict(r._mapping) for r in rows], settings.alert_flow_m_s))
    suspects.sort(key=lambda s: (s["abnormal_readings"] == 0, not s["online"], s["along_m"]))
    for rank, suspect in enumerate(suspects, start=1):
        suspect["rank"] = rank
    reaches = [{"fid": r["id"], "code": r["properties"]["code"], "name": r["properties"]["name"],
                "from_m": round(r["properties"]["from_m"], 1), "to_m": round(r["properties"]["to_m"], 1)}
               for r in traced["reaches"]["features"]]
    return {"traced_m": settings.alert_trace_m, "window": {"from": start, "to": alert.last_at},
            "ranking": "abnormal readings first, then sources reporting online, then distance along the rivers",
            "reaches": reaches, "suspects": suspects,
            "hidden": sorted(hidden & {"pollution_sources"})}


async def fill_one(app: FastAPI) -> bool:
    settings = app.state.settings
    hidden = app.state.access.private()  # the context is part of the alert: nothing private goes into it
    async with app.state.engine.connect() as conn:
        alert = (await conn.execute(PENDING)).first()
        if alert is None:
            return False
        context = await context_of(conn, alert, settings, hidden)
    async with app.state.engine.begin() as conn:
        await conn.execute(text("SELECT set_config('twin.actor', 'events.context', true)"))
        await conn.execute(text("UPDATE layers.alerts SET context = :context WHERE fid = :fid AND context IS NULL"),
                           {"fid": alert.fid, "context": orjson.dumps(context).decode()})
    return True


async def work(app: FastAPI) -> None:
    while True:
        try:
            busy = await fill_one(app)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            failed_round(log, "the upstream context of an alert failed", e)
            busy = False
            await asyncio.sleep(5)
        if not busy:
            await app.state.event_hub.wait(IDLE_S)
