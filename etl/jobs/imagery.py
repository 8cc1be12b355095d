"""Raster layers: any GDAL-readable raster becomes a validated Cloud-Optimized GeoTIFF
registered in the catalog (`twin.raster_source`), which the raster tiles serve."""

import shutil
from pathlib import Path

from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from sqlalchemy import text
from sqlalchemy.engine import Engine

LAYERS = ("imagery",)
ALIASES: dict[str, str] = {}


def register(engine: Engine, source: Path, layer: str, raster_dir: Path, run_id: int, sha256: str) -> Path:
    """Write `source` as a COG under raster_dir and point the layer at it, in the run's transaction."""
    raster_dir.mkdir(parents=True, exist_ok=True)
    target = raster_dir / f"{layer}-{sha256[:16]}.tif"
    if not target.exists():
        partial = target.with_suffix(".partial.tif")
        cog_translate(str(source), str(partial), cog_profiles.get("deflate"), in_memory=False, quiet=True)
        valid, errors, _ = cog_validate(str(partial))
        if not valid:
            partial.unlink(missing_ok=True)
            raise ValueError(f"{source.name} did not convert to a valid COG: {'; '.join(errors)}")
        shutil.move(partial, target)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO twin.raster_source (layer, path, file_sha256, run_id) VALUES (:layer, :path, :sha, :run) "
            "ON CONFLICT (layer) DO UPDATE SET path = EXCLUDED.path, file_sha256 = EXCLUDED.file_sha256, "
            "run_id = EXCLUDED.run_id, registered_at = now()"),
            {"layer": layer, "path": str(target), "sha": sha256, "run": run_id})
        conn.execute(text("UPDATE twin.etl_run SET status = 'succeeded', finished_at = clock_timestamp(), "
                          "read = 1, inserted = 1 WHERE id = :id"), {"id": run_id})
    return target
