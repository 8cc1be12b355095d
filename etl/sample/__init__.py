"""Deterministic synthetic data for 新吴区 (320214), for the layers no public source has.

`generate()` writes one file per layer into a directory. Real inputs (district boundary, Grand
Canal, 沙渚 water-quality series) come from `data/real`, or from `$TWIN_REAL_DATA_DIR`.
The same seed and arguments give byte-identical files.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pyogrio
import shapely

from etl.sample import components as components_
from etl.sample import departments
from etl.sample import district as district_
from etl.sample import network as network_
from etl.sample import pollution, raster, readings, real, rivers, roads, stations
from etl.sample.geo import rng, to_degrees, to_metres
from layers.catalog import SRID, get_layer

Progress = Callable[[str, int, int], None]
# GeoPackage stamps files with the current time unless told otherwise.
FIXED_DATE = "2026-01-01T00:00:00Z"
FILES = {
    "streets": "streets.gpkg", "grids": "grids.gpkg", "roads": "roads.gpkg", "rivers": "rivers.gpkg",
    "pollution_sources": "pollution_sources.csv", "monitoring_stations": "monitoring_stations.gpkg",
    "water_quality": "water_quality.csv", "city_components": "city_components.gpkg", "imagery": "elevation.tif",
    "pipes": "pipes.gpkg", "manholes": "manholes.gpkg", "pump_stations": "pump_stations.gpkg",
    "treatment_plants": "treatment_plants.gpkg", "outfalls": "outfalls.gpkg", "gates": "gates.gpkg",
    **departments.FILES,
}
NETWORK = ("manholes", "pump_stations", "treatment_plants", "outfalls", "gates", "pipes")
PIPES_PER_COMPONENT = 2.5  # 20,000 components (the default scale) come with about 50,000 pipes


def generate(out_dir: Path, components: int = 20_000, seed: int = 42, days: int = 90,
             progress: Progress | None = None, pipes: int | None = None) -> dict[str, Path]:
    """Write every synthetic layer into out_dir; return layer id -> file written. `pipes`: about how many
    drainage pipes (default PIPES_PER_COMPONENT a component)."""
    pipes = round(PIPES_PER_COMPONENT * components) if pipes is None else pipes
    if components < 1 or days < 1 or pipes < 1:
        raise ValueError("components, days and pipes must be at least 1")
    report = progress or (lambda stage, done, total: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {layer: out_dir / name for layer, name in FILES.items()}
    for path in paths.values():
        path.unlink(missing_ok=True)

    inputs = real.data_dir()
    district = real.district(inputs)
    with _gdal_options(OGR_CURRENT_DATE=FIXED_DATE):
        streets = district_.streets(district, rng(seed, "streets"))
        _write_layer(streets, paths["streets"], "streets")
        report("streets", 1, 1)
        grids = district_.grids(streets)
        _write_layer(grids, paths["grids"], "grids")
        report("grids", 1, 1)
        road_table = roads.roads(district, rng(seed, "roads"))
        _write_layer(road_table, paths["roads"], "roads")
        report("roads", 1, 1)
        network = rivers.network(district, real.canal(inputs), rng(seed, "rivers"))
        reaches = rivers.reaches(network)
        _write_layer(reaches, paths["rivers"], "rivers")
        report("rivers", 1, 1)

        sources = pollution.sources(max(300, components // 60), district, network, road_table, rng(seed, "pollution"))
        pollution.write_csv(sources, paths["pollution_sources"])
        report("pollution_sources", 1, 1)
        station_table = stations.stations(network, road_table, streets, district, rng(seed, "stations"))
        _write_layer(station_table, paths["monitoring_stations"], "monitoring_stations")
        report("monitoring_stations", 1, 1)
        load = readings.pollution_load(station_table, network, sources)
        readings.write(paths["water_quality"], station_table, load, real.water_stats(inputs), days, rng(seed, "readings"))
        report("water_quality", 1, 1)
        departments.write(paths, _write_layer, district, real.taihu(inputs), streets, road_table, network, reaches,
                          sources, seed)
        report("departments", 1, 1)

        done = 0
        for chunk in components_.chunks(components, road_table, grids, seed):
            _write_layer(chunk, paths["city_components"], "city_components", append=done > 0)
            done += len(chunk)
            report("city_components", done, components)

    raster.write(paths["imagery"], district, shapely.union_all(reaches.geometry.values), rng(seed, "elevation"))
    report("imagery", 1, 1)
    covers = pyogrio.read_dataframe(paths["city_components"], columns=["code", "class_name"],
                                    where="class_name IN ('污水井盖', '雨水井盖')")
    covers = covers.set_geometry(to_metres(covers.geometry.values))
    drainage = network_.network(road_table, reaches, paths["imagery"], covers, pipes, rng(seed, "network"))
    with _gdal_options(OGR_CURRENT_DATE=FIXED_DATE):
        for layer in NETWORK:
            _write_layer(getattr(drainage, layer), paths[layer], layer)
    report("pipes", 1, 1)
    return paths


def _write_layer(table: gpd.GeoDataFrame, path: Path, layer_id: str, append: bool = False) -> None:
    """Write the spec's fields, in spec order, with the geometry mapped back to CGCS2000 degrees."""
    spec = get_layer(layer_id)
    columns = [f.name for f in spec.fields]
    frame = gpd.GeoDataFrame(table[columns], geometry=to_degrees(table.geometry.values), crs=f"EPSG:{SRID}")
    pyogrio.write_dataframe(frame, path, layer=layer_id, geometry_type=spec.geometry, append=append, use_arrow=True)


@contextmanager
def _gdal_options(**options: str) -> Iterator[None]:
    previous = {key: pyogrio.get_gdal_config_option(key) for key in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(previous)
