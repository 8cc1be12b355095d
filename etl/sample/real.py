"""The bundled real inputs: the district boundary, the Grand Canal line, Taihu's outline and the 沙渚 water-quality
series."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from etl.offset import gcj02_to_wgs84, transform_geometries
from etl.sample.geo import to_metres

DISTRICT_CODE = "320214"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "real"
CANAL_SOURCE = "GMT 中文社区 china-geospatial-data CN-Rivers.dat（约1:400万，位置误差可达数百米）"

# Real column -> output column, for the parameters drawn from a log-normal fit.
LOGNORMAL = {
    "do": "do_mg_l", "conductivity": "conductivity_us_cm", "turbidity": "turbidity_ntu",
    "codmn": "codmn_mg_l", "nh3n": "nh3n_mg_l", "tp": "tp_mg_l", "tn": "tn_mg_l",
}


def data_dir() -> Path:
    return Path(os.environ.get("TWIN_REAL_DATA_DIR") or DEFAULT_DIR)


def district(directory: Path) -> shapely.Polygon:
    """新吴区 (adcode 320214), converted from GCJ-02 to WGS84, in the local metric frame."""
    path = directory / "datav-boundaries" / "wuxi_districts_detailed_2019.geojson"
    features = json.loads(path.read_text("utf-8"))["features"]
    feature = next(f for f in features if str(f["properties"]["adcode"]) == DISTRICT_CODE)
    wgs84 = transform_geometries(np.array([shapely.geometry.shape(feature["geometry"])]), gcj02_to_wgs84)
    geom = shapely.make_valid(to_metres(wgs84)[0])
    return max(shapely.get_parts(geom), key=lambda p: p.area)


def canal(directory: Path) -> shapely.LineString:
    """京杭运河 in the metric frame, drawn north-west to south-east (its flow direction past Wuxi)."""
    path = directory / "gmt-china-hydro-rail" / "wuxi_taihu_canal_railway.geojson"
    feature = json.loads(path.read_text("utf-8"))["features"][1]
    line = to_metres(shapely.geometry.shape(feature["geometry"]))
    coords = shapely.get_coordinates(line)
    return shapely.LineString(coords if coords[0, 1] > coords[-1, 1] else coords[::-1])


def taihu(directory: Path) -> shapely.Polygon:
    """太湖's outer ring (the source's island ring is corrupt, see etl.bundle) in the metric frame."""
    path = directory / "gmt-china-hydro-rail" / "wuxi_taihu_canal_railway.geojson"
    lake = next(f for f in json.loads(path.read_text("utf-8"))["features"] if f["properties"]["kind"] == "lake")
    return shapely.make_valid(to_metres(shapely.Polygon(lake["geometry"]["coordinates"][0])))


@dataclass(frozen=True)
class WaterStats:
    log_median: dict[str, float]  # per LOGNORMAL parameter
    log_sigma: dict[str, float]  # robust (MAD-based), so the odd instrument spike does not inflate it
    ph_mean: float
    ph_sd: float
    temp_mean: float  # annual cycle: mean + amplitude * cos(2π (doy - peak_doy) / 365.25)
    temp_amplitude: float
    temp_peak_doy: float
    do_per_degree: float  # slope of DO against temperature (saturation falls as water warms)


def water_stats(directory: Path) -> WaterStats:
    path = directory / "cnemc-water-quality" / "shazhu_daily_2020-05-10_to_2021-04-05.csv"
    rows = pd.read_csv(path, na_values=["--", "*"])
    rows = rows[rows["status"] == "正常"]
    log_median, log_sigma = {}, {}
    for name, column in LOGNORMAL.items():
        logs = np.log(rows[column].dropna().to_numpy())
        log_median[name] = float(np.median(logs))
        log_sigma[name] = float(1.4826 * np.median(np.abs(logs - np.median(logs))))
    temp = rows.dropna(subset=["water_temp_c"])
    angle = 2 * np.pi * pd.to_datetime(temp["file_date"]).dt.day_of_year.to_numpy() / 365.25
    design = np.column_stack([np.ones_like(angle), np.cos(angle), np.sin(angle)])
    (mean, a, b), *_ = np.linalg.lstsq(design, temp["water_temp_c"].to_numpy(), rcond=None)
    both = rows.dropna(subset=["water_temp_c", "do_mg_l"])
    slope = np.polyfit(both["water_temp_c"], both["do_mg_l"], 1)[0]
    return WaterStats(
        log_median=log_median, log_sigma=log_sigma,
        ph_mean=float(rows["ph"].mean()), ph_sd=float(rows["ph"].std()),
        temp_mean=float(mean), temp_amplitude=float(np.hypot(a, b)),
        temp_peak_doy=float(np.arctan2(b, a) * 365.25 / (2 * np.pi) % 365.25),
        do_per_degree=float(slope),
    )
