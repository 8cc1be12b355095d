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
    # MQTT (docs/mqtt.md): an external broker as mqtt://user:password@host:port (the server's own account);
    # unset: the managed mosquitto (`twin broker up`) on mqtt_host:mqtt_port (0: a free port, picked once).
    mqtt_url: str | None = None
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 0
    # `twin serve` ingests from the broker's Datastream topics (sensing.mqtt_ingest) when a broker is there.
    mqtt_ingest: bool = True
    # The shared subscription's group every ingest process of the city joins, with TWIN_MQTT_URL (the managed
    # broker's is a secret of its own: twin.broker.ingest_group).
    mqtt_group: str = "twin-ingest"
    mqtt_batch: int = 500  # messages committed together at most ...
    mqtt_batch_ms: int = 50  # ... or after this long
    mqtt_stream_rate: float = 100  # messages a second one Datastream takes over MQTT ...
    mqtt_stream_burst: int = 5000  # ... in bursts of up to this many (sensing.mqtt_limit)
    # Events (docs/alerts.md): SSE clients get a comment line this often; one that falls stream_queue events behind
    # is dropped (it resumes by Last-Event-ID). Webhooks: workers per process, events per POST, the first retry
    # after webhook_backoff_s doubling up to webhook_backoff_max_s, paused after failing for webhook_retry_s.
    stream_heartbeat_s: float = 15
    stream_queue: int = 1000
    webhook_workers: int = 2
    webhook_batch: int = 500
    webhook_timeout_s: float = 10
    webhook_backoff_s: float = 10
    webhook_backoff_max_s: float = 600
    webhook_retry_s: float = 86400
    # Alerts: a new or changed rule is judged over the readings of the last alert_replay_hours; a water alert's
    # upstream context traces alert_trace_m up the rivers, reads sources from alert_context_hours before it, and
    # reckons travel times at alert_flow_m_s.
    alert_replay_hours: float = 24
    alert_trace_m: float = 10_000
    alert_context_hours: float = 24
    alert_flow_m_s: float = 0.3

    # Continuous archiving and point-in-time recovery of the managed cluster (twin.pitr, pgBackRest): WAL is
    # archived at least every archive_timeout_s (the most a lost disk can take), into backup_repo (default
    # data_dir/backups: put it on another disk). A base backup is full when the newest full one is older than
    # backup_full_every_days, else incremental; backup_retention_full full backups are kept, with their WAL.
    archive: bool = True
    backup_repo: Path | None = None
    archive_timeout_s: int = 60
    backup_full_every_days: int = 7
    backup_retention_full: int = 2
    # Bounded sessions (migration 0014, `twin db analyst-role`): an analyst's statement, transaction left idle,
    # and idle connection are cut after these many seconds; each analyst role has so many connections at most.
    analyst_statement_timeout_s: int = 300
    analyst_idle_in_transaction_timeout_s: int = 600
    analyst_idle_session_timeout_s: int = 3600
    analyst_connection_limit: int = 10
    # The app's own role: a transaction it leaves idle this long is cut (a leak; the ETL's long loads never idle
    # that long between statements). Its statements are bounded per session (statement_timeout_ms above).
    app_idle_in_transaction_timeout_s: int = 600
    # Anonymous case reports (POST /cases, Open311) from one client address within an hour, at most (cases.routes).
    cases_reports_per_hour: int = 20

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
