"""An elevation-like raster over the district: the 2–10 m plain of the Taihu basin, rivers cut a
little below it, and a few low hills in the south-east (鸿山) up to about 60 m. Written as a COG."""

from pathlib import Path

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from etl.sample.geo import SmoothField, to_degrees, xy

WIDTH, HEIGHT = 1024, 768
NODATA = -9999.0
# lon, lat, height (m), radius (m) of the hills around 鸿山
HILLS = [(120.520, 31.494, 58.0, 650.0), (120.510, 31.503, 34.0, 500.0),
         (120.531, 31.487, 22.0, 450.0), (120.541, 31.481, 15.0, 380.0)]


def write(path: Path, district: shapely.Polygon, rivers: shapely.Geometry, rng: np.random.Generator) -> None:
    """`district` and `rivers` in the metric frame."""
    west, south, east, north = to_degrees(district).bounds
    transform = Affine((east - west) / WIDTH, 0.0, west, 0.0, -(north - south) / HEIGHT, north)
    lon, lat = np.meshgrid(transform.c + (np.arange(WIDTH) + 0.5) * transform.a,
                           transform.f + (np.arange(HEIGHT) + 0.5) * transform.e)
    x, y = xy(lon, lat)

    dx, dy = SmoothField(rng, amplitude=1.0, wavelength=8000.0, waves=4)(x, y)
    texture, _ = SmoothField(rng, amplitude=0.3, wavelength=1500.0, waves=16)(x, y)
    z = 5.0 + 1.6 * dx + 0.8 * dy + texture
    for hill_lon, hill_lat, height, radius in HILLS:
        hx, hy = xy(hill_lon, hill_lat)
        z += height * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * radius**2))
    z = np.clip(z, 2.0, None)
    river_pixels = ~geometry_mask([to_degrees(rivers)], (HEIGHT, WIDTH), transform, all_touched=True)
    z = np.where(river_pixels, np.maximum(z - 1.5, 0.5), z)
    outside = geometry_mask([to_degrees(district)], (HEIGHT, WIDTH), transform)
    z = np.where(outside, NODATA, z).astype("float32")

    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 1, "dtype": "float32",
               "crs": CRS.from_epsg(4490), "transform": transform, "nodata": NODATA}
    with MemoryFile() as memory:
        with memory.open(**profile) as band:
            band.write(z, 1)
            band.update_tags(1, units="m", description="模拟高程（非实测）")
        with memory.open() as source:
            cog_translate(source, str(path), cog_profiles.get("deflate") | {"predictor": 3},
                          in_memory=True, quiet=True)
