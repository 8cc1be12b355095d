"""Tile settings from the environment (`TWIN_TILE_` prefix)."""

from functools import cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class TileSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWIN_TILE_", env_file=".env", extra="ignore")

    cache_mb: float = 256  # the in-memory tile cache's bound, in encoded bytes
    # A point layer is clustered below its minzoom + cluster_zooms, and at any zoom where a tile
    # would hold more than dense_points points.
    cluster_zooms: int = 2
    dense_points: int = 2000
    cluster_cells: int = 16  # a clustered tile is cut into cluster_cells x cluster_cells cells
    # Browsers revalidate live tiles every time (cheap: 304 on an ETag match); past as_of tiles never change.
    live_cache_control: str = "public, no-cache"
    past_cache_control: str = "public, max-age=31536000, immutable"
    poll_seconds: float = 5.0  # the change listener also polls, in case a NOTIFY is missed
    plans: int = 512  # tile SQL texts kept compiled, one per shape (tiles.plans)
    redis_ttl_s: int = 7 * 24 * 3600  # how long a tile stays in the shared cache (with TWIN_REDIS_URL)


@cache
def tile_settings() -> TileSettings:
    return TileSettings()
