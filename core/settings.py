"""Settings, read once from the environment (and `.env`), one class per concern."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path("var")


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class ApiSettings(BaseSettings):
    """The HTTP API process."""

    model_config = _config("API_")
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, description="Port the API listens on.")
    max_body_bytes: int = Field(1024 * 1024, description="Largest accepted request body.")


class BrokerSettings(BaseSettings):
    """Redis/Valkey: the Celery broker, live events and worker heartbeats."""

    model_config = _config("BROKER_")
    url: str = Field(
        "redis://127.0.0.1:6380/0",
        validation_alias=AliasChoices("REDIS_URL", "BROKER_URL"),
        description="Redis URL; `make run` starts a private Valkey here when it is local.",
    )
    visibility_timeout: int = Field(
        1800,
        description="Seconds before an unacknowledged task is redelivered to another worker; "
        "must exceed the longest step.",
    )
    restore_interval: int = Field(
        30, description="Seconds between a worker's sweeps for messages past the visibility "
        "timeout (those of a worker that died).",
    )


class DatabaseSettings(BaseSettings):
    """The job store."""

    model_config = _config("DATABASE_")
    url: str = Field(
        f"sqlite:///{DATA_DIR}/orchestrator.db",
        validation_alias=AliasChoices("DATABASE_URL"),
        description="SQLAlchemy URL: SQLite (default) or postgresql+psycopg://…",
    )


class OrchestratorSettings(BaseSettings):
    """Job behaviour shared by the API and the workers."""

    model_config = _config("ORCHESTRATOR_")
    sync_timeout: float = Field(8.0, description="Longest `wait` a request may ask for (s).")
    idempotency_window: int = Field(3600, description="Seconds a repeated request maps to a job.")
    max_step_deliveries: int = Field(
        5, description="Deliveries of one step before it is failed as poison."
    )


class WorkerSettings(BaseSettings):
    """Worker processes."""

    model_config = _config("WORKER_")
    concurrency: int = Field(2, description="Processes per worker (prefork).")
    heartbeat_seconds: float = Field(5.0, description="How often a worker reports it is alive.")
    send_events: bool = Field(True, description="Emit Celery task events (Flower needs them).")


class FlowerSettings(BaseSettings):
    """The Flower dashboard."""

    model_config = _config("FLOWER_")
    port: int = Field(5555, description="Port Flower listens on.")
    basic_auth: str = Field("", description="user:password; `make run` generates one if empty.")


class Settings(BaseSettings):
    """Every concern's settings."""

    model_config = _config("")
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    broker: BrokerSettings = Field(default_factory=lambda: BrokerSettings())
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings())
    orchestrator: OrchestratorSettings = Field(default_factory=lambda: OrchestratorSettings())
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    flower: FlowerSettings = Field(default_factory=lambda: FlowerSettings())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
