"""Raster layers: any GDAL-readable raster becomes a validated Cloud-Optimized GeoTIFF
registered in the catalog (`twin.raster_source`), which the raster tiles serve."""

import shutil
from pathlib import Path

from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from sqlalchemy import text
from sqlalchemy.engine import Connection

LAYERS = ("imagery",)
ALIASES: dict[str, str] = {}


def to_cog(source: Path, layer: str, raster_dir: Path, sha256: str) -> Path:
    """`source` written as a validated COG under raster_dir, named by its content (kept when already there)."""
    raster_dir.mkdir(parents=True, exist_ok=True)
    target = raster_dir / f"{layer}-{sha256[:16]}.tif"
    if not target.exists():
        partial = target.with_suffix(".partial.tif")
        try:
            cog_translate(str(source), str(partial), cog_profiles.get("deflate"), in_memory=False, quiet=True)
            valid, errors, _ = cog_validate(str(partial))
            if not valid:
                raise ValueError(f"{source.name} did not convert to a valid COG: {'; '.join(errors)}")
            shutil.move(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def register(conn: Connection, source: Path, layer: str, raster_dir: Path, run_id: int, sha256: str) -> Path:
    """Convert `source` to a COG and point the layer at it, in the caller's transaction."""
    target = to_cog(source, layer, raster_dir, sha256)
    conn.execute(text(
        "INSERT INTO twin.raster_source (layer, path, file_sha256, run_id) VALUES (:layer, :path, :sha, :run) "
        "ON CONFLICT (layer) DO UPDATE SET path = EXCLUDED.path, file_sha256 = EXCLUDED.file_sha256, "
        "run_id = EXCLUDED.run_id, registered_at = now()"),
        {"layer": layer, "path": str(target.resolve()), "sha": sha256, "run": run_id})
    return target
