"""The water-quality series endpoint against aggregates computed here with pandas and layers.water_class."""

import pandas as pd
import pytest

from layers.water_class import classify_frame

CST = "Asia/Shanghai"
PARAMETERS = ["water_temp", "ph", "do", "conductivity", "turbidity", "codmn", "nh3n", "tp", "tn"]


@pytest.fixture(scope="module")
def station(engine, loaded) -> tuple[str, str, pd.DataFrame]:
    with engine.connect() as conn:
        code, evaluation_type = conn.exec_driver_sql(
            "SELECT s.code, s.evaluation_type FROM layers.monitoring_stations s "
            "WHERE EXISTS (SELECT FROM layers.water_quality w WHERE w.station_code = s.code) "
            "ORDER BY s.code LIMIT 1").one()
        columns = ", ".join(f'"{p}"' for p in PARAMETERS)
        readings = pd.read_sql(f"SELECT observed_at, status, {columns} FROM layers.water_quality "
                               f"WHERE station_code = %(code)s", conn, params={"code": code})
    return code, evaluation_type, readings


def test_daily_means_extremes_and_classes(http, station):
    code, evaluation_type, readings = station
    local = readings.assign(day=readings.observed_at.dt.tz_convert(CST).dt.floor("D"))
    first = local.day.min() + pd.Timedelta(days=1)
    days = [first, first + pd.Timedelta(days=1)]
    body = http.get("/collections/water_quality/series", params={
        "station": code, "aggregate": "daily", "datetime": f"{days[0].date()}/{days[1].date()}"}).json()
    assert body["station"]["code"] == code and body["station"]["evaluation_type"] == evaluation_type
    assert body["parameters"]["do"] == {"title": "溶解氧", "unit": "mg/L"}
    normal = local[(local.status == "正常") & local.day.isin(days)]
    grouped = normal.groupby("day")
    means = grouped[PARAMETERS].mean()
    classes = classify_frame(means, evaluation_type)
    assert [pd.Timestamp(p["start"]) for p in body["periods"]] == list(means.index)
    for period, (day, mean) in zip(body["periods"], means.iterrows()):
        assert pd.Timestamp(period["end"]) - pd.Timestamp(period["start"]) == pd.Timedelta(days=1)
        assert period["start"].endswith("+08:00")
        assert period["count"] == len(grouped.get_group(day))
        for p in PARAMETERS:
            values = grouped.get_group(day)[p]
            assert period["values"][p]["mean"] == pytest.approx(mean[p], rel=1e-12)
            assert (period["values"][p]["min"], period["values"][p]["max"]) == (values.min(), values.max())
        assert (period["water_class"], period["limiting"]) == (classes.loc[day, "water_class"],
                                                              classes.loc[day, "limiting"])


def test_hourly_periods_cover_every_normal_reading(http, station):
    code, _, readings = station
    body = http.get("/collections/water_quality/series", params={"station": code, "aggregate": "hourly"}).json()
    normal = readings[readings.status == "正常"]
    hours = normal.observed_at.dt.floor("h").nunique()
    assert len(body["periods"]) == hours
    assert sum(p["count"] for p in body["periods"]) == len(normal)
    assert all(1 <= p["water_class"] <= 6 for p in body["periods"] if p["water_class"] is not None)
