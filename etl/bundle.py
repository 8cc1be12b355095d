"""The bundled district dataset: the real public data in `data/` plus the generated sample,
loaded through the same ETL path a department uses. Loading is idempotent: a file whose
content was already loaded successfully into its layer is skipped."""

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Engine

from etl.readers import Dataset, read
from etl.run import RunResult, run_dataset, run_file, run_raster, sha256_of
from twin.settings import REPO_ROOT, Settings

SEED = 42
DEPARTMENTS = ("radiation_points", "water_source_zones", "green_spaces", "river_chiefs", "river_chief_contacts",
               "cameras", "camera_streams")
GCJ02_EXPORTS = ("cameras", "camera_streams")  # a city-management platform exports on the Amap (GCJ-02) base map
SHAZHU = "CNEMC-SHAZHU"
DATA_DIR = REPO_ROOT / "data"


def _already_loaded(engine: Engine, layer: str, sha: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM twin.etl_run WHERE layer = :layer AND file_sha256 = :sha "
                                 "AND status = 'succeeded' LIMIT 1"), {"layer": layer, "sha": sha}).first() is not None


def _skipped() -> RunResult:
    return RunResult(0, "succeeded", {"skipped": 1})


def _sample(settings: Settings, components: int, progress: Callable[[str], None]) -> dict[str, Path]:
    from etl.sample import FILES, generate

    out = settings.data_dir / "sample"
    manifest = out / "manifest.json"
    wanted = {"components": components, "seed": SEED}
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("args") == wanted and set(FILES) <= set(saved["files"]) \
                and all(Path(p).exists() for p in saved["files"].values()):
            return {k: Path(v) for k, v in saved["files"].items()}
    progress("generating the district sample")
    files = generate(out, components=components, seed=SEED)
    manifest.write_text(json.dumps({"args": wanted, "files": {k: str(v) for k, v in files.items()}}))
    return files


def _adapted(path: Path, frame: pd.DataFrame, geometry: pd.Series | None, crs: str | None = None) -> Dataset:
    return Dataset(frame.reset_index(drop=True), None if geometry is None else geometry.reset_index(drop=True),
                   crs, path.name)


def _real_datasets(real: Path) -> list[tuple[str, str, str | None, Path, Callable[[], Dataset]]]:
    """(job, layer, source CRS, file, reader) for the real data, adapted to the layers' fields."""
    gmt = real / "gmt-china-hydro-rail" / "wuxi_taihu_canal_railway.geojson"
    metro = real / "metroman-wuxi-metro" / "wuxi_metro_gcj02.geojson"
    readings = real / "cnemc-water-quality" / "shazhu_daily_2020-05-10_to_2021-04-05.csv"

    def taihu() -> Dataset:
        # The source's hole ring (西山岛) is corrupt — unclosed and placed near 108E 41N — so GDAL
        # cannot read the polygon; the lake's outer ring is sound and is what we bundle.
        lake = next(f for f in json.loads(gmt.read_text("utf-8"))["features"] if f["properties"]["kind"] == "lake")
        outline = shapely.Polygon(lake["geometry"]["coordinates"][0])
        frame = pd.DataFrame({"code": ["taihu"], "name": ["太湖"], "water_kind": ["湖泊"],
                              "source": ["GMT 中文社区 china-geospatial-data CN-Rivers (coarse, ~1:4,000,000); "
                                         "outer ring only, the source's island ring is corrupt"]})
        return _adapted(gmt, frame, pd.Series([outline], dtype=object))

    def metro_part(kind: str) -> Callable[[], Dataset]:
        def build() -> Dataset:
            data = read(metro)
            frame = data.attributes
            if kind == "stations":
                rows = frame["line"].isna()
                adapted = pd.DataFrame({"code": frame.loc[rows, "id"].astype(int).astype(str),
                                        "name": frame.loc[rows, "name"],
                                        "pinyin": frame.loc[rows, "pinyin"],
                                        "lines": frame.loc[rows, "lines"].map(_join_lines),
                                        "transfer": frame.loc[rows, "transfer"]})
            else:
                rows = frame["line"].notna()
                adapted = pd.DataFrame({"name": frame.loc[rows, "line"], "color": frame.loc[rows, "color"]})
            return _adapted(metro, adapted, data.geometry[rows])
        return build

    def shazhu() -> Dataset:
        data = read(readings)
        frame = data.attributes.drop(columns=["station"]).assign(station_code=SHAZHU)
        # The publication leaves the time empty on 95 维护/停站 days (never on a normal one); the
        # day's file stands for it at the usual 08:00, so those days stay in the series with their status.
        untimed = frame["monitor_time"].str.strip().eq("")
        frame.loc[untimed, "monitor_time"] = frame.loc[untimed, "file_date"] + " 08:00"
        return _adapted(readings, frame, None)

    return [
        ("boundaries", "districts", "GCJ02", real / "datav-boundaries" / "wuxi_districts_detailed_2019.geojson", None),
        ("rivers", "water_bodies", None, gmt, taihu),
        ("metro", "metro_stations", "GCJ02", metro, metro_part("stations")),
        ("metro", "metro_lines", "GCJ02", metro, metro_part("lines")),
        ("monitoring_stations", "monitoring_stations", "GCJ02", DATA_DIR / "stations_cnemc.csv", None),
        ("water_quality", "water_quality", None, readings, shazhu),
    ]


def _join_lines(value) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return "、".join(value) if value is not None else None


def load_bundle(engine: Engine, settings: Settings, components: int = 20_000,
                progress: Callable[[str], None] = lambda stage: None) -> list[tuple[str, str, RunResult]]:
    sample = _sample(settings, components, progress)
    plan = _real_datasets(settings.real_data_dir)
    stations_at = next(i for i, p in enumerate(plan) if p[1] == "monitoring_stations")
    plan[stations_at:stations_at] = [
        ("boundaries", "streets", None, sample["streets"], None),
        ("boundaries", "grids", None, sample["grids"], None),
        ("roads", "roads", None, sample["roads"], None),
        ("rivers", "rivers", None, sample["rivers"], None),
        ("monitoring_stations", "monitoring_stations", None, sample["monitoring_stations"], None),
        ("city_components", "city_components", None, sample["city_components"], None),
        ("pollution_sources", "pollution_sources", "GCJ02", sample["pollution_sources"], None),
        *(("drainage_nodes", layer, None, sample[layer], None)
          for layer in ("manholes", "pump_stations", "treatment_plants", "outfalls", "gates")),
        ("drainage_pipes", "pipes", None, sample["pipes"], None),
    ]
    plan.append(("water_quality", "water_quality", None, sample["water_quality"], None))
    # the departments' layers load by the generic job of their layer (etl.jobs): the spec alone maps the columns
    plan += [(layer, layer, "GCJ02" if layer in GCJ02_EXPORTS else None, sample[layer], None) for layer in DEPARTMENTS]
    results = []
    for job, layer, crs, path, build in plan:
        sha = sha256_of(path)
        if _already_loaded(engine, layer, sha):
            results.append((path.name, layer, _skipped()))
            continue
        progress(f"loading {path.name} into {layer}")
        if build is None:
            result = run_file(engine, job, path, layer=layer, crs=crs, actor="demo")
        else:
            result = run_dataset(engine, job, build(), layer=layer, file_name=path.name, sha=sha, crs=crs,
                                 actor="demo")
        results.append((path.name, layer, result))
    results.append(_load_imagery(engine, settings, sample["imagery"]))
    return results


def _load_imagery(engine: Engine, settings: Settings, path: Path) -> tuple[str, str, RunResult]:
    sha = sha256_of(path)
    if _already_loaded(engine, "imagery", sha):
        return path.name, "imagery", _skipped()
    return path.name, "imagery", run_raster(engine, path, layer="imagery", raster_dir=settings.data_dir / "rasters",
                                            actor="demo")
