"""Time series: mean/min/max per hour or day of a water-quality station's parameters, or of a stored Datastream.

Periods are hours or days of China Standard Time (Asia/Shanghai), the clock the readings are
published on.

- `/collections/{layer}/series?station=`, for a series layer (`kind = "series"` with its `stations`, e.g.
  water_quality): the station's readings are the layer's rows (for water quality one copy, sensing.water_quality;
  they are never in sensing.observation, so there is no aggregate of them to read: a station-year of hourly
  readings is 8,760 rows found by the layer's (station, time) key). Where the layer has a status with 正常 only
  normal readings enter the aggregates, as only they get a class. With `classify = "gb3838"` the class of a
  period is the GB 3838 class of its mean values (layers.water_class).
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
from layers.catalog import LayerSpec, get_layer
from layers.statements import fetch_one
from layers.tables import layer_at
from layers.water_class import classify_frame
from sensing import tables as t
from sensing import water_quality as wq
from twin.access import require_read
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["features"])
TIME_ZONE = params.LOCAL_TIME.key
NORMAL = "正常"
MAX_PERIODS = 20_000
UNITS = {"hourly": "hour", "daily": "day"}


def series_layer(layer: str) -> LayerSpec:
    """A series layer (`kind = "series"`) whose readings belong to a layer of `stations`."""
    spec = get_layer(layer)
    if spec is None or spec.kind != "series" or spec.stations is None or get_layer(spec.stations) is None:
        raise ApiError(404, "not_a_series", f"'{layer[:80]}' is not a series layer of stations. See /collections.",
                       where="path.layer")
    return spec


async def _station(conn, spec: LayerSpec, code: str, as_of: datetime | None):
    stations_spec = get_layer(spec.stations)
    stations = layer_at(stations_spec, as_of).c
    evaluation = stations.evaluation_type if "evaluation_type" in stations else literal(None)
    row = await fetch_one(conn, select(stations.code, stations.name, evaluation.label("evaluation_type"))
                          .where(stations.code == code))
    if row is None:
        raise ApiError(404, "unknown_station", f"No station '{code[:40]}' in {spec.stations}"
                       + (f" as of {as_of.isoformat()}" if as_of else "")
                       + f". See /collections/{spec.stations}/items",
                       where="query.station")
    return row


def _classes(spec: LayerSpec, means: pd.DataFrame, evaluation_type: str | None) -> pd.DataFrame | None:
    if spec.classify != "gb3838" or evaluation_type is None or means.empty:
        return None
    return classify_frame(means, evaluation_type)


@router.get("/collections/{layer}/series")
async def series(
    request: Request,
    layer: str,
    station: str = Query(..., max_length=64, description="Station code (the `code` of the series' stations layer)"),
    aggregate: Literal["hourly", "daily"] = Query("daily", description="Period length (China Standard Time)"),
    moment: params.Period | None = Depends(params.period),
    as_of: datetime | None = Depends(params.as_of),
):
    spec = series_layer(layer)
    await require_read(request, [spec.id, spec.stations], "path")  # the readings and the station they describe
    readings = layer_at(spec, as_of).c
    at, station_of = readings[spec.time_field], readings[spec.key[0]]
    fields = [f for f in spec.fields if f.type == "real"]
    start = func.date_trunc(UNITS[aggregate], at, TIME_ZONE).label("start")
    measures = [agg(readings[f.name]).label(f"{f.name}_{name}") for f in fields
                for name, agg in (("mean", func.avg), ("min", func.min), ("max", func.max))]
    where = [station_of == station]
    if NORMAL in (getattr(spec.field("status"), "values", None) or ()):
        where.append(readings.status == literal(NORMAL))
    if moment is not None:
        where.append(moment.clause(at))
    grouped = (select(start, func.count().label("count"), *measures).where(*where)
               .group_by(start).order_by(start).limit(MAX_PERIODS + 1))
    async with request.app.state.read_engine.connect() as conn:
        found = await _station(conn, spec, station, as_of)
        rows = (await conn.execute(grouped)).mappings().all()
    if len(rows) > MAX_PERIODS:
        raise ApiError(400, "too_many_periods", f"More than {MAX_PERIODS} periods: narrow datetime or aggregate "
                       "daily", where="query.datetime")
    means = pd.DataFrame([{f.name: row[f"{f.name}_mean"] for f in fields} for row in rows], dtype=float)
    classes = _classes(spec, means, found.evaluation_type)
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
                   "href": f"{base_url(request)}/collections/{spec.id}"}],
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
