"""Water-quality readings: wide (a column per parameter) or long (station, time, parameter, value)
tables, parameters by name or HJ 212-2017 factor code; each normal reading gets its GB 3838 class."""

import pandas as pd
from sqlalchemy import text

from etl.factors import factor_aliases
from layers.water_class import classify_frame

LAYERS = ("water_quality",)
ALIASES = {"站点编码": "station_code", "站点代码": "station_code", "断面编码": "station_code", "mn": "station_code",
           "station": "station_code", "监测时间": "observed_at", "时间": "observed_at", "datatime": "observed_at",
           "monitor_time": "observed_at", "time": "observed_at", "状态": "status", "站点情况": "status",
           **factor_aliases()}
MISSING = {"--", "*", "—", "-", "/"}
_LONG_PARAMETER = ("parameter", "factor", "监测项目", "因子", "polid", "项目")
_LONG_VALUE = ("value", "监测值", "数值", "rtd", "avg")


def _long_to_wide(frame: pd.DataFrame) -> pd.DataFrame:
    lower = {c.lower(): c for c in frame.columns}
    parameter = next((lower[n] for n in _LONG_PARAMETER if n in lower), None)
    value = next((lower[n] for n in _LONG_VALUE if n in lower), None)
    if not parameter or not value:
        return frame
    aliases = factor_aliases()
    frame = frame.assign(_field=frame[parameter].astype("string").str.strip().str.lower().map(aliases))
    unknown = frame["_field"].isna()
    if unknown.any():
        names = ", ".join(sorted(set(frame.loc[unknown, parameter].astype(str)))[:5])
        raise ValueError(f"unknown water-quality parameters in column {parameter!r}: {names}")
    keys = [c for c in frame.columns if c not in (parameter, value, "_field")]
    frame[keys] = frame[keys].astype("object").fillna("")  # grouping drops NaN keys; blank ones get rejected
    # a parameter given twice for one station and time: the last value wins, as for repeated rows (layers.validate)
    return frame.pivot_table(index=keys, columns="_field", values=value, aggfunc="last").reset_index()


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    # the class is ours to compute from the values, whatever a source file claims
    frame = _long_to_wide(frame).drop(columns=["water_class", "limiting"], errors="ignore")
    frame = frame.mask(frame.astype("string").apply(lambda c: c.str.strip()).isin(MISSING))
    if "status" not in frame:
        frame["status"] = "正常"
    return frame


def enrich(conn, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """Classify normal readings with their station's evaluation type; reject readings of unknown stations."""
    stations = dict(conn.execute(text("SELECT code, evaluation_type FROM layers.monitoring_stations")).all())
    kind = frame["station_code"].map(stations)
    rejects = {i: f"站点编码 (station_code) {frame.at[i, 'station_code']!r} is not a known monitoring station; "
                  "load the station first" for i in frame.index[kind.isna()]}
    frame = frame.drop(index=list(rejects))
    kind = kind.drop(index=list(rejects))
    frame["water_class"], frame["limiting"] = pd.NA, pd.NA
    for evaluation_type in kind.unique():
        rows = (kind == evaluation_type) & (frame["status"] == "正常")
        if rows.any():
            classes = classify_frame(frame.loc[rows].astype({c: "float64" for c in ("do", "codmn", "nh3n", "tp")}),
                                     evaluation_type)
            frame.loc[rows, "water_class"] = classes["water_class"]
            frame.loc[rows, "limiting"] = classes["limiting"]
    frame["water_class"] = frame["water_class"].astype("Int64")
    return frame, rejects
