"""Settings from the environment (`TWIN_` prefix) or a `.env` file."""

from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWIN_", env_file=".env", extra="ignore")

    # An external PostGIS; when unset, the managed local cluster in data_dir is used.
    database_url: str | None = None
    # Streaming replicas for reads, comma-separated (twin.replicas); writes stay on database_url.
    database_read_urls: Annotated[list[str], NoDecode] = []
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    log_json: bool = False
    log_level: str = "INFO"
    statement_timeout_ms: int = 30_000
    pool_size: int = 10
    # How long a request waits for a database connection before it gets a 503 (seconds).
    pool_timeout_s: float = 5
    connect_timeout_s: int = 3
    # Bundled real data; overridable so tests never depend on the checkout's neighbours.
    real_data_dir: Path = REPO_ROOT / "data" / "real"
    max_upload_mb: int = 200
    # A filtered items page counts the matches past it up to this many; beyond, numberMatched is left out (OGC
    # API Features makes it optional) and `next` links carry on: counting millions costs far more than the page.
    # An unfiltered page reads the layer's count, which the database keeps (twin.feature_count).
    items_count_limit: int = 10_000
    # Origins whose web pages may call the API (a map client on another host); [] for none.
    cors_origins: list[str] = ["*"]
    # MapLibre style documents (`styles/`); read per request, so an edit is served at once.
    styles_dir: Path = REPO_ROOT / "styles"
    # A Redis (redis://host:port/db) the workers share tiles through; unset: each worker caches alone.
    redis_url: str | None = None
    # HJ 212-2017 packets from dischargers' data loggers (sensing.hj212_ingest); port 0 turns the listener off.
    # Every worker listens on the same port (SO_REUSEPORT), the kernel spreading connections among them.
    hj212_host: str = "127.0.0.1"
    hj212_port: int = 9212

    @field_validator("database_read_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        urls = [url.strip() for url in value.split(",") if url.strip()] if isinstance(value, str) else value
        for url in urls:
            if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
                raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1][:80]!r} "
                                 "(postgresql://user:pw@host:port/db)")
        return urls


@cache
def get_settings() -> Settings:
    return Settings()
