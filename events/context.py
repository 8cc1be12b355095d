"""The upstream context of a water alert, computed when it opens and kept in the alert (`context`, JSON).

For an alert at a monitoring station: what drains to the station by the drainage network's trace
(layers.drainage_trace, pgRouting over rivers, outfalls, pipes and pump stations; within `alert_trace_m` along
the network). Its suspects are the pollution sources, outfalls and pump stations reached, each with its distance
along the network and, where it reports online (a Thing whose properties name it: `layer` and `fid`, or a
source's `credit_code`), its readings from `alert_context_hours` before the alert's first offending reading to
its last, per factor, with how many were over the permit limit, and the alerts its Things raised in that window.
Suspects are ranked: those with abnormal readings or alerts first, then those reporting online, then the rest;
within each, nearer along the network first. Each says why, with the travel time at `alert_flow_m_s`.
The layers are found by the network roles their specs declare (stations, sources, outfalls, pump stations,
rivers: layers.catalog), never by name.

A worker in every server process fills in alerts that have no context yet, woken by the event hub; so an
alert opened by any path, while any server was down, gets its context. The context is computed without a lock
and stored only where there is none yet: a row lock held across the trace, then the change log's writer lock,
would deadlock with ingest, which takes them the other way round. Two servers may both compute one; one stores.
"""

import asyncio
import logging
from datetime import timedelta

import orjson
from fastapi import FastAPI
from sqlalchemy import select, text

from layers import drainage_graph, drainage_trace
from layers.catalog import SCHEMA, get_layer
from layers.drainage_layers import layer_id, quoted, spec
from layers.tables import current
from twin.tasks import failed_round

log = logging.getLogger("events.context")
IDLE_S = 30
STATIONS, SOURCES, RIVERS = "stations", "sources", "rivers"  # network roles (layers.catalog)
SUSPECTS = (SOURCES, "outfalls", "pump_stations")


def pending():
    """The first alert at a station that has no context yet, with the station's fid (None: not in its layer)."""
    stations = spec(STATIONS)
    return text("SELECT a.fid, a.first_at, a.last_at, s.fid AS station FROM layers.alerts a "
                f"LEFT JOIN {quoted(SCHEMA, stations.id)} s ON s.{quoted(stations.key[0])} = a.station_code "
                "WHERE a.context IS NULL AND a.station_code IS NOT NULL AND a.state <> 'closed' "
                "ORDER BY a.fid LIMIT 1")


# Per suspect (layer, fid, code): each Datastream of each Thing that names it, with its readings in the window
READINGS = text(
    "WITH s (layer, fid, code) AS (SELECT * FROM unnest(CAST(:layers AS text[]), CAST(:fids AS bigint[]), "
    "                                                    CAST(:codes AS text[]))) "
    "SELECT s.layer, s.fid, th.id AS thing_id, th.name AS thing, d.properties ->> 'hj212_code' AS factor, "
    "d.name AS datastream, count(o.id) AS readings, min(o.result) AS min, max(o.result) AS max, "
    "(th.properties -> 'permit_limits' ->> (d.properties ->> 'hj212_code'))::float8 AS permit_limit, "
    "count(o.id) FILTER (WHERE o.result > (th.properties -> 'permit_limits' ->> (d.properties ->> 'hj212_code'))"
    "::float8) AS over_limit "
    "FROM s JOIN sensing.thing th ON th.properties @> jsonb_build_object('layer', s.layer, 'fid', s.fid) "
    "  OR (s.layer = :sources AND th.properties ->> 'credit_code' = s.code) "
    "JOIN sensing.datastream d ON d.thing_id = th.id "
    "LEFT JOIN sensing.observation o ON o.datastream_id = d.id AND o.phenomenon_time BETWEEN :start AND :end "
    "GROUP BY s.layer, s.fid, th.id, d.id ORDER BY th.name, d.name")
# Alerts of those Things overlapping the window, this one left out
ALERTS = text("SELECT thing_id, count(*) AS alerts FROM layers.alerts WHERE thing_id = ANY(CAST(:things AS bigint[])) "
              "AND fid <> :alert AND first_at <= :end AND coalesce(closed_at, 'infinity') >= :start "
              "GROUP BY thing_id")


async def upstream(conn, station: int, settings) -> drainage_trace.Reach | None:
    """What drains to the station within `alert_trace_m` along the network; None when it is not on it."""
    try:
        return await drainage_trace.upstream(conn, layer_id(STATIONS), station, settings.alert_trace_m)
    except drainage_trace.NotOnNetwork:
        return None


async def _named(conn, layer: str, fids) -> dict[int, dict]:
    """fid → {code, name} of the layer's features."""
    spec = get_layer(layer)
    src = current(spec)
    rows = (await conn.execute(select(src.c.fid, src.c[spec.key[0]], src.c.name)
                               .where(src.c.fid.in_(list(fids))))).all()
    return {fid: {"code": code, "name": name} for fid, code, name in rows}


def _suspect(layer: str, fid: int, named: dict, along_m: float, readings: list, alerts: int,
             flow_m_s: float) -> dict:
    abnormal = sum(r["over_limit"] for r in readings)
    hours = along_m / flow_m_s / 3600
    watch = ([f"{abnormal} reading(s) over the permit limit in the window"] if abnormal else []) + \
        ([f"{alerts} alert(s) of its own in the window"] if alerts else [])
    why = ["; ".join(watch) if watch else ("reports online, nothing over its limit in the window" if readings
                                           else "no online monitoring"),
           f"{along_m:.0f} m upstream along the drainage network",
           f"about {hours:.1f} h of travel at {flow_m_s:g} m/s"]
    return {"layer": layer, "fid": fid, "code": named.get("code"), "name": named.get("name"),
            "along_m": round(along_m, 1), "travel_h": round(hours, 2), "abnormal_readings": abnormal,
            "alerts": alerts, "online": bool(readings), "readings": readings, "why": "; ".join(why)}


async def _monitoring(conn, reached: list[tuple[str, int, dict]], alert, start) -> tuple[dict, dict]:
    """Per (layer, fid): its readings in the window; per (layer, fid): its Things' alerts in the window."""
    rows = (await conn.execute(READINGS, {
        "layers": [layer for layer, _, _ in reached], "fids": [fid for _, fid, _ in reached],
        "codes": [named.get("code") for _, _, named in reached], "sources": layer_id(SOURCES), "start": start,
        "end": alert.last_at})).all()
    readings: dict[tuple[str, int], list] = {}
    things: dict[int, set[tuple[str, int]]] = {}
    for row in rows:
        values = dict(row._mapping)
        key = (values.pop("layer"), values.pop("fid"))
        things.setdefault(values.pop("thing_id"), set()).add(key)
        readings.setdefault(key, []).append(values)
    alerts: dict[tuple[str, int], int] = {}
    if things:
        for thing, count in (await conn.execute(ALERTS, {"things": list(things), "alert": alert.fid, "start": start,
                                                         "end": alert.last_at})).all():
            for key in things[thing]:
                alerts[key] = alerts.get(key, 0) + count
    return readings, alerts


async def context_of(conn, alert, settings, hidden: frozenset[str]) -> dict:
    traced = None if alert.station is None else await upstream(conn, alert.station, settings)
    if traced is None:
        return {"reaches": [], "suspects": [], "note": "the station is not on the drainage network"}
    start = alert.first_at - timedelta(hours=settings.alert_context_hours)
    reached = []
    suspect_layers = [layer_id(role) for role in SUSPECTS]
    for layer in suspect_layers:
        found = {} if layer in hidden else traced.features.get(layer, {})
        names = await _named(conn, layer, found) if found else {}
        reached += [(layer, fid, names.get(fid, {})) for fid in found]
    readings, alerts = await _monitoring(conn, reached, alert, start) if reached else ({}, {})
    suspects = [_suspect(layer, fid, named, traced.features[layer][fid], readings.get((layer, fid), []),
                         alerts.get((layer, fid), 0), settings.alert_flow_m_s) for layer, fid, named in reached]
    suspects.sort(key=lambda s: (s["abnormal_readings"] + s["alerts"] == 0, not s["online"], s["along_m"],
                                 s["layer"], s["fid"]))
    for rank, suspect in enumerate(suspects, start=1):
        suspect["rank"] = rank
    river_layer = layer_id(RIVERS)
    rivers = {} if river_layer in hidden else traced.features.get(river_layer, {})
    names = await _named(conn, river_layer, rivers) if rivers else {}
    reaches = sorted(({"fid": fid, **names.get(fid, {}), "along_m": round(metres, 1)}
                      for fid, metres in rivers.items()), key=lambda r: (r["along_m"], r["fid"]))
    return {"traced_m": settings.alert_trace_m, "window": {"from": start, "to": alert.last_at},
            "trace": "drainage network upstream (pgRouting)",
            "ranking": "abnormal readings or alerts first, then sources reporting online, then distance along "
                       "the drainage network",
            "reaches": reaches, "suspects": suspects, "hidden": sorted(hidden & {*suspect_layers, river_layer})}


async def fill_one(app: FastAPI) -> bool:
    settings = app.state.settings
    hidden = app.state.access.private()  # the context is part of the alert: nothing private goes into it
    async with app.state.engine.connect() as conn:
        alert = (await conn.execute(pending())).first()
    if alert is None:
        return False
    async with app.state.engine.begin() as conn:  # the graph follows the layers it is made of
        await drainage_graph.refresh(conn)
    async with app.state.engine.connect() as conn:
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
