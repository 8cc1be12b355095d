"""The departments' layers added by issue 23, written as each department hands them over: radiation points and
cameras as CSV exports with their own column names, the rest as GeoPackages in the spec's fields; the private
companions (the chiefs' phones, the cameras' streams) in files of their own."""

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import shapely

from etl.sample import cameras as cameras_
from etl.sample import green, radiation, river_chiefs, water_sources
from etl.sample.geo import rng
from etl.sample.rivers import River

FILES = {
    "radiation_points": "radiation_points.csv", "water_source_zones": "water_source_zones.gpkg",
    "green_spaces": "green_spaces.gpkg", "river_chiefs": "river_chiefs.gpkg",
    "river_chief_contacts": "river_chief_contacts.gpkg", "cameras": "cameras.csv",
    "camera_streams": "camera_streams.csv",
}
CAMERAS = 200
WriteLayer = Callable[[gpd.GeoDataFrame, Path, str], None]


def write(paths: dict[str, Path], write_layer: WriteLayer, district: shapely.Polygon, lake: shapely.Polygon,
          streets: gpd.GeoDataFrame, roads: gpd.GeoDataFrame, rivers: list[River], reaches: gpd.GeoDataFrame,
          sources: gpd.GeoDataFrame, seed: int) -> None:
    """Generate and write the departments' layers into `paths` (layer id -> file); `write_layer` writes a
    GeoPackage layer in its spec's fields."""
    zones = water_sources.zones(district, lake, rng(seed, "water_source_zones"))
    write_layer(zones, paths["water_source_zones"], "water_source_zones")
    station_site = shapely.difference(zones.geometry.iloc[0], lake).point_on_surface()  # on the 一级 zone's shore
    radiation.write_csv(radiation.points(district, streets, sources, station_site, rng(seed, "radiation_points")),
                        paths["radiation_points"])
    parks = green.green_spaces(streets, roads, reaches, lake, rng(seed, "green_spaces"))
    write_layer(parks, paths["green_spaces"], "green_spaces")
    chiefs, contacts = river_chiefs.chiefs(rivers, streets, district, rng(seed, "river_chiefs"))
    write_layer(chiefs, paths["river_chiefs"], "river_chiefs")
    write_layer(contacts, paths["river_chief_contacts"], "river_chief_contacts")
    cameras = cameras_.cameras(CAMERAS, roads, reaches, sources, parks, streets, district, rng(seed, "cameras"))
    cameras_.write_csv(cameras, cameras_.CSV_HEADERS, paths["cameras"])
    cameras_.write_csv(cameras_.streams(cameras), cameras_.STREAM_HEADERS, paths["camera_streams"])

