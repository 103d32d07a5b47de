"""Settings, read once from the environment (and `.env`), one class per concern."""

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path("var")


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class ApiSettings(BaseSettings):
    """The HTTP API process."""

    model_config = _config("API_")
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, description="Port the API listens on.")
    workers: int = Field(1, ge=1, description="API processes sharing the port (uvicorn workers).")
    max_body_bytes: int = Field(1024 * 1024, description="Largest accepted request body.")
    public_url: str = Field(
        "", description="The API's address as callers reach it (resume URLs, the OpenAPI "
        "`servers` entry); empty means http://API_HOST:API_PORT.")

    @property
    def base_url(self) -> str:
        """Where callers reach the API, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


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
    restore_lock_seconds: int = Field(
        30, description="Longest hold of the lock that lets one worker at a time restore "
        "messages: how long a worker killed while restoring can delay the others.",
    )


class DatabaseSettings(BaseSettings):
    """The job store."""

    model_config = _config("DATABASE_")
    url: str = Field(
        f"sqlite:///{DATA_DIR}/orchestrator.db",
        validation_alias=AliasChoices("DATABASE_URL"),
        description="SQLAlchemy URL: SQLite (default) or postgresql+psycopg://…",
    )
    pool_size: int = Field(
        10, ge=1, description="Connections each process keeps to the job store; steps hold one "
        "only while recording, so a few serve hundreds of concurrent steps.")
    max_overflow: int = Field(20, ge=0, description="Extra connections under a burst.")


class OrchestratorSettings(BaseSettings):
    """Job behaviour shared by the API and the workers."""

    model_config = _config("ORCHESTRATOR_")
    sync_timeout: float = Field(8.0, description="Longest `wait` a request may ask for (s).")
    idempotency_window: int = Field(3600, description="Seconds a repeated request maps to a job.")
    max_step_deliveries: int = Field(
        5, description="Deliveries of one step before it is failed as poison."
    )
    upstream_retries: int = Field(
        5, ge=0, description="Celery retries of a step whose upstream's breaker is open, each "
        "after the breaker's reset timeout.")
    lost_after: float = Field(
        120.0, gt=0, description="Seconds a queued or running job may go without an event "
        "before the sweeper asks the broker for its message; when none is there at two checks "
        "in a row (the API died before enqueueing, or a killed worker took it), its remaining "
        "steps are sent again.")
    max_steps: int = Field(
        100, ge=1, description="Most steps one job's plan may have; a plan that would grow "
        "past it fails the step that grew it.")
    approval_ttl: float = Field(
        3600.0, gt=0, description="Seconds a held step waits for approval before it fails.")
    wait_timeout: float = Field(
        86400.0, gt=0, description="Longest a waiting step waits for its resume URL (s).")
    debug_crash: bool = Field(
        False, description="Let `debug.crash` kill the worker process running it (to rehearse "
        "poison handling); off, it fails instead. Never on in production.")


class WorkerSettings(BaseSettings):
    """Worker processes."""

    model_config = _config("WORKER_")
    heartbeat_seconds: float = Field(5.0, description="How often a worker reports it is alive.")
    lost_after: float = Field(
        45.0, gt=0, description="Seconds without a heartbeat after which a worker process "
        "counts as dead and the sweeper sends its running steps again.")
    send_events: bool = Field(True, description="Emit Celery task events (Flower needs them).")


class PoolSettings(BaseSettings):
    """Per pool: how many steps run at once and how long one may run.

    `llm`, `tools`, `flow` and `callbacks` run a threads pool (their steps wait on the network);
    `memory` runs prefork processes (embedding is CPU-bound). Time limits stay below the
    broker's visibility timeout, so a slow step is never redelivered for being slow.
    """

    model_config = _config("POOL_")
    llm_concurrency: int = Field(100, ge=1, description="Threads of an `llm` worker.")
    tools_concurrency: int = Field(500, ge=1, description="Threads of a `tools` worker.")
    memory_concurrency: int = Field(2, ge=1, description="Processes of a `memory` worker.")
    flow_concurrency: int = Field(100, ge=1, description="Threads of a `flow` worker.")
    callbacks_concurrency: int = Field(50, ge=1, description="Threads of a `callbacks` worker.")
    soft_time_limit: float = Field(
        900.0, gt=0, description="Seconds a step may run before it is asked to stop (its "
        "handler sees the deadline; prefork also raises SoftTimeLimitExceeded).")
    time_limit: float = Field(
        960.0, gt=0, description="Seconds after which a prefork step's process is killed; "
        "above the soft limit, below BROKER_VISIBILITY_TIMEOUT.")

    def concurrency(self, pool: str) -> int:
        value: int = getattr(self, f"{pool}_concurrency")
        return value


class FlowerSettings(BaseSettings):
    """The Flower dashboard."""

    model_config = _config("FLOWER_")
    port: int = Field(5555, description="Port Flower listens on.")
    basic_auth: str = Field("", description="user:password; `make run` generates one if empty.")


class RetrySettings(BaseSettings):
    """The one retry policy for calls to the outside world (jittered exponential backoff)."""

    model_config = _config("RETRY_")
    attempts: int = Field(3, ge=1, description="Tries of one call before giving up (stop).")
    initial: float = Field(0.2, ge=0, description="First backoff in seconds.")
    maximum: float = Field(5.0, ge=0, description="Longest single backoff in seconds.")
    jitter: float = Field(0.2, ge=0, description="Random seconds added to each backoff.")
    max_retry_after: float = Field(30.0, ge=0, description="Longest `Retry-After` honoured (s).")


class BreakerSettings(BaseSettings):
    """Circuit breakers, one per upstream, with their state shared in Redis."""

    model_config = _config("BREAKER_")
    fail_max: int = Field(5, ge=1, description="Consecutive failures that open a breaker.")
    reset_timeout: float = Field(30.0, gt=0, description="Seconds an open breaker stays open.")


class CallbackSettings(BaseSettings):
    """Signed callback delivery."""

    model_config = _config("CALLBACK_")
    timeout: float = Field(15.0, gt=0, description="Seconds one delivery attempt may take.")
    max_response_bytes: int = Field(
        64 * 1024, description="Bytes of a receiver's response body read and kept.")
    schedule: list[float] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        description="Seconds to wait before each retry after a failed attempt (JSON list).")
    allowed_networks: list[str] = Field(
        [], description="CIDRs callbacks may reach although private (JSON list), e.g. "
        '["127.0.0.1/32"].')
    sweep_seconds: float = Field(
        5.0, gt=0, description="How often the sweeper sends deliveries that are due.")

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


class EmbeddingsSettings(BaseSettings):
    """The embedder of the memory pool: WordLlama in-process, or an OpenAI-compatible server."""

    model_config = _config("EMBEDDINGS_")
    base_url: str = Field(
        "", description="An OpenAI-compatible API (`…/v1`) whose `/embeddings` embeds memory; "
        "empty uses the embedded WordLlama model.")
    model: str = Field("text-embedding-3-small",
                       description="The embeddings model asked of EMBEDDINGS_BASE_URL.")
    api_key: str = Field("", description="Bearer key for EMBEDDINGS_BASE_URL.")
    timeout: float = Field(30.0, gt=0, description="Seconds one embeddings request may take.")
    batch_size: int = Field(64, ge=1, le=2048, description="Texts embedded per request/batch.")
    wordllama_config: str = Field("l2_supercat", description="The WordLlama model shipped in "
                                  "its wheel (used when EMBEDDINGS_BASE_URL is empty).")
    wordllama_dim: int = Field(256, description="WordLlama's dimension (64, 128, 256, 512, "
                               "1024; the wheel ships 256).")

    @property
    def name(self) -> str:
        """The embedder's id, stored with every item it embedded."""
        if self.base_url:
            return f"openai:{self.model}"
        return f"wordllama:{self.wordllama_config}:{self.wordllama_dim}"


class MemorySettings(BaseSettings):
    """Memory search: hybrid ranking and the SQLite store's in-process vector cache."""

    model_config = _config("MEMORY_")
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant: an item scores "
                       "the sum of 1/(k + rank) over the semantic and keyword lists.")
    candidates: int = Field(50, ge=1, le=1000, description="Items each list (semantic, keyword) "
                            "contributes to a hybrid search before fusion (at least `k`).")
    cache_mb: int = Field(512, ge=0, description="Megabytes of vectors a memory worker process "
                          "keeps per SQLite store for exact search (0: read them every time).")


class Settings(BaseSettings):
    """Every concern's settings."""

    model_config = _config("")
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    broker: BrokerSettings = Field(default_factory=lambda: BrokerSettings())
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings())
    orchestrator: OrchestratorSettings = Field(default_factory=lambda: OrchestratorSettings())
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    pool: PoolSettings = Field(default_factory=lambda: PoolSettings())
    flower: FlowerSettings = Field(default_factory=lambda: FlowerSettings())
    retry: RetrySettings = Field(default_factory=lambda: RetrySettings())
    breaker: BreakerSettings = Field(default_factory=lambda: BreakerSettings())
    callback: CallbackSettings = Field(default_factory=lambda: CallbackSettings())
    embeddings: EmbeddingsSettings = Field(default_factory=lambda: EmbeddingsSettings())
    memory: MemorySettings = Field(default_factory=lambda: MemorySettings())


    @model_validator(mode="after")
    def _limits_below_visibility(self) -> "Settings":
        pool, visibility = self.pool, self.broker.visibility_timeout
        if not pool.soft_time_limit < pool.time_limit < visibility:
            raise ValueError(
                f"POOL_SOFT_TIME_LIMIT ({pool.soft_time_limit:g}) < POOL_TIME_LIMIT "
                f"({pool.time_limit:g}) < BROKER_VISIBILITY_TIMEOUT ({visibility}) must hold, "
                "so that no running step is redelivered for being slow")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
