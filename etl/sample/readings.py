"""Hourly water-quality readings per station, shaped after the real 沙渚 series.

Each parameter is its real (log-)median plus a slow AR(1) wander; temperature and DO follow
the fitted annual cycle and a diurnal one (photosynthesis lifts DO in the afternoon); nutrient
series share a common factor (rain runoff and discharges move them together). Stations that
drain many pollution sources read worse; a rare discharge spike, maintenance hours (维护) and
the odd multi-day outage (停站) leave their marks as in a real feed.
"""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from etl.sample.real import WaterStats
from etl.sample.rivers import River, upstream

END = np.datetime64("2026-10-31T23", "h")  # local time, +08:00
COLUMNS = ["station_code", "observed_at", "status", "water_temp", "ph", "do",
           "conductivity", "turbidity", "codmn", "nh3n", "tp", "tn"]
DECIMALS = {"water_temp": 2, "ph": 2, "do": 2, "conductivity": 1, "turbidity": 1,
            "codmn": 2, "nh3n": 3, "tp": 3, "tn": 2}
LOGNORMAL = ["conductivity", "turbidity", "codmn", "nh3n", "tp", "tn"]
NUTRIENTS = {"turbidity", "codmn", "nh3n", "tp", "tn"}  # the ones driven by the common factor
POLLUTION_EFFECT = {"conductivity": 0.25, "turbidity": 0.3, "codmn": 0.35, "nh3n": 0.8, "tp": 0.6, "tn": 0.5}
SPIKE_EFFECT = {"turbidity": 0.7, "codmn": 0.5, "nh3n": 1.0, "tp": 0.6, "tn": 0.4}
PERMIT_WEIGHT = {"重点管理": 3.0, "简化管理": 1.5, "登记管理": 0.5}
LOAD_SCALE = 25.0  # weighted nearby sources that make a stretch of river "half polluted"
LOAD_RANGE_M = 400.0


def pollution_load(stations: gpd.GeoDataFrame, rivers: list[River], sources: gpd.GeoDataFrame) -> np.ndarray:
    """0..1 per station: the weighted sources near everything upstream of it, diluted by river width."""
    # Per source weights are scaled to a 300-source district, so the load does not grow with the sample size.
    weight = sources.permit_class.map(PERMIT_WEIGHT).to_numpy() * 300.0 / len(sources)
    load = []
    for r, at in zip(stations["river"], stations["at"]):
        distance = shapely.distance(sources.geometry.values, upstream(rivers, r, at))
        raw = float(np.sum(weight * np.exp(-distance / LOAD_RANGE_M)))
        load.append(raw / np.sqrt(rivers[r].width / 10.0))
    return 1.0 - np.exp(-np.array(load) / LOAD_SCALE)


def write(path: Path, stations: gpd.GeoDataFrame, load: np.ndarray, stats: WaterStats, days: int,
          rng: np.random.Generator) -> None:
    n, hours = len(stations), days * 24
    times = END - np.arange(hours - 1, -1, -1).astype("timedelta64[h]")
    hour = (times - times.astype("datetime64[D]")).astype(int)
    doy = (times - times.astype("datetime64[Y]")).astype("timedelta64[h]").astype(float) / 24.0
    diurnal = np.sin(2 * np.pi * (hour - 9) / 24.0)  # peaks mid-afternoon
    f = load[:, None]

    season = stats.temp_mean + stats.temp_amplitude * np.cos(2 * np.pi * (doy - stats.temp_peak_doy) / 365.25)
    temp = season + 0.8 * diurnal + rng.normal(0, 0.4, (n, 1)) + 0.7 * _ar1(rng, n, hours, 72.0)
    spikes = _spikes(rng, n, hours, days)
    values = {"water_temp": temp}
    do = (np.exp(stats.log_median["do"]) + stats.do_per_degree * (temp - stats.temp_mean) + 0.9 * diurnal
          + 0.6 * stats.log_sigma["do"] * np.exp(stats.log_median["do"]) * _ar1(rng, n, hours, 24.0) - 1.5 * f)
    values["do"] = np.clip(do * (1.0 - 0.3 * spikes), 0.3, 20.0)
    values["ph"] = stats.ph_mean + 0.12 * diurnal - 0.2 * f + 0.6 * stats.ph_sd * _ar1(rng, n, hours, 48.0)
    common = _ar1(rng, n, hours, 36.0)
    for name in LOGNORMAL:
        sigma = stats.log_sigma[name]
        own = _ar1(rng, n, hours, 36.0)
        noise = np.sqrt(0.5) * common + np.sqrt(0.5) * own if name in NUTRIENTS else own
        log = (stats.log_median[name] + POLLUTION_EFFECT[name] * f + rng.normal(0, 0.3 * sigma, (n, 1))
               + 0.85 * sigma * noise + SPIKE_EFFECT.get(name, 0.0) * spikes)
        values[name] = np.exp(log)

    status = _status(rng, n, hours, days)
    table = pd.DataFrame({
        "station_code": np.repeat(stations["code"].to_numpy(), hours),
        "observed_at": np.tile(np.datetime_as_string(times, unit="s").astype(object) + "+08:00", n),
        "status": status.ravel(),
    })
    normal = status.ravel() == "正常"
    for name in COLUMNS[3:]:
        table[name] = np.where(normal, np.round(values[name].ravel(), DECIMALS[name]), np.nan)
    table.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")


def _ar1(rng: np.random.Generator, n: int, hours: int, tau: float) -> np.ndarray:
    """Unit-variance AR(1) series with an e-folding time of `tau` hours, one per station."""
    phi = np.exp(-1.0 / tau)
    shocks = rng.normal(0.0, np.sqrt(1 - phi**2), (n, hours))
    out = np.empty((n, hours))
    out[:, 0] = rng.normal(0.0, 1.0, n)
    for t in range(1, hours):
        out[:, t] = phi * out[:, t - 1] + shocks[:, t]
    return out


def _spikes(rng: np.random.Generator, n: int, hours: int, days: int) -> np.ndarray:
    """Log-scale bumps of rare discharge events: a fast rise and a slower decay."""
    out = np.zeros((n, hours))
    for s in range(n):
        for _ in range(rng.poisson(days / 90.0)):
            start, size = rng.integers(0, hours), rng.uniform(1.0, 2.5)
            t = np.arange(hours - start)
            out[s, start:] += size * (1 - np.exp(-t / 1.5)) * np.exp(-t / rng.uniform(3.0, 8.0))
    return out


def _status(rng: np.random.Generator, n: int, hours: int, days: int) -> np.ndarray:
    status = np.full((n, hours), "正常", dtype=object)
    for s in range(n):
        for _ in range(rng.poisson(days * 0.1)):  # routine maintenance: a few hours every ten days or so
            start = rng.integers(0, hours)
            status[s, start:start + rng.integers(2, 11)] = "维护"
        if rng.random() < 0.12 * min(1.0, days / 90.0):  # an outage of one to four days
            start = rng.integers(0, hours)
            status[s, start:start + rng.integers(24, 97)] = "停站"
    return status
