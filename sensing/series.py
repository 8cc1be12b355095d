"""Time series: mean/min/max per hour or day of a water-quality station's parameters, or of a stored Datastream.

Periods are hours or days of China Standard Time (Asia/Shanghai), the clock the readings are
published on.

- `/collections/water_quality/series?station=`: the station's readings are the water_quality layer's rows (one
  copy, sensing.water_quality; they are never in sensing.observation, so there is no aggregate of them to read:
  a station-year of hourly readings is 8,760 rows found by the layer's (station_code, observed_at) key). Only
  normal readings (status 正常) enter the aggregates, as only they get a class. The class of a period is the
  GB 3838 class of its mean values (layers.water_class).
- `/datastreams/{id}/series`: a stored Datastream's (an online source's factor, any Datastream made over the
  API) periods are read from the hourly and daily aggregates the store keeps (migration 0013), never from
  the raw rows, so a year's daily series reads 365 rows whatever the sampling rate. A period is in the series
  when it starts within `datetime`.
"""

from datetime import datetime
from typing import Literal

import orjson
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import func, literal, select

from layers import params
from layers.catalog import get_layer
from layers.statements import fetch_one
from layers.tables import layer_at
from layers.water_class import classify_frame
from sensing import tables as t
from sensing import water_quality as wq
from twin.access import require_read
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["features"])
LAYER = "water_quality"
STATIONS = "monitoring_stations"
TIME_ZONE = params.LOCAL_TIME.key
NORMAL = "正常"
MAX_PERIODS = 20_000
UNITS = {"hourly": "hour", "daily": "day"}


def _parameters() -> list:
    return [f for f in get_layer(LAYER).fields if f.type == "real"]


async def _station(conn, code: str, as_of: datetime | None):
    stations = layer_at(get_layer(STATIONS), as_of).c
    row = await fetch_one(conn, select(stations.code, stations.name, stations.evaluation_type)
                          .where(stations.code == code))
    if row is None:
        raise ApiError(404, "unknown_station", f"No monitoring station '{code[:40]}'"
                       + (f" as of {as_of.isoformat()}" if as_of else "")
                       + ". See /collections/monitoring_stations/items",
                       where="query.station")
    return row


def _classes(means: pd.DataFrame, evaluation_type: str | None) -> pd.DataFrame | None:
    if evaluation_type is None or means.empty:
        return None
    return classify_frame(means, evaluation_type)


@router.get(f"/collections/{LAYER}/series")
async def series(
    request: Request,
    station: str = Query(..., max_length=64, description="Station code (monitoring_stations.code)"),
    aggregate: Literal["hourly", "daily"] = Query("daily", description="Period length (China Standard Time)"),
    moment: params.Period | None = Depends(params.period),
    as_of: datetime | None = Depends(params.as_of),
):
    await require_read(request, [LAYER, STATIONS], "path")  # the readings and the station they describe
    spec = get_layer(LAYER)
    readings = layer_at(spec, as_of).c
    fields = _parameters()
    start = func.date_trunc(UNITS[aggregate], readings.observed_at, TIME_ZONE).label("start")
    measures = [agg(readings[f.name]).label(f"{f.name}_{name}") for f in fields
                for name, agg in (("mean", func.avg), ("min", func.min), ("max", func.max))]
    where = [readings.station_code == station, readings.status == literal(NORMAL)]
    if moment is not None:
        where.append(moment.clause(readings.observed_at))
    grouped = (select(start, func.count().label("count"), *measures).where(*where)
               .group_by(start).order_by(start).limit(MAX_PERIODS + 1))
    async with request.app.state.read_engine.connect() as conn:
        found = await _station(conn, station, as_of)
        rows = (await conn.execute(grouped)).mappings().all()
    if len(rows) > MAX_PERIODS:
        raise ApiError(400, "too_many_periods", f"More than {MAX_PERIODS} periods: narrow datetime or aggregate "
                       "daily", where="query.datetime")
    means = pd.DataFrame([{f.name: row[f"{f.name}_mean"] for f in fields} for row in rows], dtype=float)
    classes = _classes(means, found.evaluation_type)
    step = pd.Timedelta(hours=1) if aggregate == "hourly" else pd.Timedelta(days=1)
    periods = []
    for i, row in enumerate(rows):
        begin = pd.Timestamp(row["start"]).tz_convert(TIME_ZONE)
        period = {"start": begin.isoformat(), "end": (begin + step).isoformat(), "count": row["count"],
                  "values": {f.name: {s: row[f"{f.name}_{s}"] for s in ("mean", "min", "max")} for f in fields
                             if row[f"{f.name}_mean"] is not None}}
        if classes is not None:
            water_class, limiting = classes.iloc[i]
            period["water_class"] = None if pd.isna(water_class) else int(water_class)
            period["limiting"] = limiting
        periods.append(period)
    body = {
        "station": {"code": found.code, "name": found.name, "evaluation_type": found.evaluation_type},
        "aggregate": aggregate, "timeZone": TIME_ZONE,
        "parameters": {f.name: {"title": f.zh, "unit": f.unit} for f in fields},
        "periods": periods,
        "links": [{"rel": "self", "type": "application/json",
                   "href": f"{base_url(request)}{request.url.path}?{request.url.query}"},
                  {"rel": "collection", "type": "application/json",
                   "href": f"{base_url(request)}/collections/{LAYER}"}],
    }
    return Response(orjson.dumps(body), media_type="application/json")


AGGREGATES = {"hourly": t.observation_hourly, "daily": t.observation_daily}


@router.get("/datastreams/{datastream_id}/series")
async def datastream_series(
    request: Request,
    datastream_id: int,
    aggregate: Literal["hourly", "daily"] = Query("daily", description="Period length (China Standard Time)"),
    moment: params.Period | None = Depends(params.period),
):
    d = t.datastream
    periods_of = AGGREGATES[aggregate]
    where = [periods_of.c.datastream_id == datastream_id]
    if moment is not None:
        where.append(moment.clause(periods_of.c.period_start))
    statement = (select(periods_of.c.period_start, periods_of.c.count, periods_of.c.min, periods_of.c.max,
                        (periods_of.c.sum / func.nullif(periods_of.c.count, 0)).label("mean"))
                 .where(*where).order_by(periods_of.c.period_start).limit(MAX_PERIODS + 1))
    async with request.app.state.read_engine.connect() as conn:
        stream = (await conn.execute(select(d.c.id, d.c.name, d.c.unit_of_measurement, d.c.wq_field)
                                     .where(d.c.id == datastream_id))).first()
        if stream is None:
            raise ApiError(404, "unknown_datastream", f"No Datastream {datastream_id}. See /sta/v1.1/Datastreams",
                           where="path.datastream_id")
        if stream.wq_field is not None:
            thing = (await conn.execute(select(t.thing.c.station_code).join(d, d.c.thing_id == t.thing.c.id)
                                        .where(d.c.id == datastream_id))).scalar()
            raise ApiError(400, "water_quality_datastream", f"Datastream {datastream_id} is a water-quality "
                           f"parameter of station {thing}: its series is /collections/{wq.LAYER}/series?station="
                           f"{thing}", where="path.datastream_id")
        rows = (await conn.execute(statement)).all()
    if len(rows) > MAX_PERIODS:
        raise ApiError(400, "too_many_periods", f"More than {MAX_PERIODS} periods: narrow datetime or aggregate "
                       "daily", where="query.datetime")
    step = pd.Timedelta(hours=1) if aggregate == "hourly" else pd.Timedelta(days=1)
    periods = []
    for row in rows:
        begin = pd.Timestamp(row.period_start).tz_convert(TIME_ZONE)
        periods.append({"start": begin.isoformat(), "end": (begin + step).isoformat(), "count": row.count,
                        "mean": row.mean, "min": row.min, "max": row.max})
    body = {"datastream": {"id": stream.id, "name": stream.name, "unitOfMeasurement": stream.unit_of_measurement},
            "aggregate": aggregate, "timeZone": TIME_ZONE, "periods": periods,
            "links": [{"rel": "self", "type": "application/json",
                       "href": f"{base_url(request)}{request.url.path}?{request.url.query}"},
                      {"rel": "describedby", "type": "application/json",
                       "href": f"{base_url(request)}/sta/v1.1/Datastreams({stream.id})"}]}
    return Response(orjson.dumps(body), media_type="application/json")
