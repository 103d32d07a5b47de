"""Settings, read once from the environment (and `.env`), one class per concern."""

import ipaddress
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from core.errors import ConfigError

DATA_DIR = Path("var")


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


def split_list(value: Any) -> Any:
    """A list setting as people write it: `a`, `a,b` or a JSON list."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


LIST_FORM = "one value, comma-separated values or a JSON list"


def _list_setting(value: Any) -> Any:
    try:
        return split_list(value)
    except ValueError as exc:
        raise ValueError(f"not {LIST_FORM}") from exc


StrList = Annotated[list[str], NoDecode, BeforeValidator(_list_setting)]


class ApiSettings(BaseSettings):
    """The HTTP API process."""

    model_config = _config("API_")
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, description="Port the API listens on.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1,
        description="API processes sharing the port (uvicorn workers); default one per "
        "core (on the 2-core benchmark machine a second raised jobs/s 1.8x).")
    max_body_bytes: int = Field(1024 * 1024, description="Largest accepted request body.")
    public_url: str = Field(
        "", description="The API's address as callers reach it (resume URLs, the OpenAPI "
        "`servers` entry); empty means http://API_HOST:API_PORT.")
    metrics_token: str = Field(
        "", description="Bearer token Prometheus sends to scrape /metrics "
        "(`Authorization: Bearer …`); operator API keys may scrape too. Empty: operators only.")
    key_cache_seconds: float = Field(
        2.0, ge=0, le=5, description="Seconds an API process trusts its cached lookup of an "
        "API key (at most 5): a revoked or expired key is refused by every process within it.")
    mcp_task_ttl: float = Field(
        86400.0, gt=0, description="Longest an MCP task (a job started by a task-augmented "
        "`tools/call` on `/mcp`) is kept (s): a requested `ttl` is capped by it, no `ttl` gets "
        "it; after it the task is gone for `tasks/*` (the job stays in `/v1/jobs`).")

    @property
    def base_url(self) -> str:
        """Where callers reach the API, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class RateLimitSettings(BaseSettings):
    """Requests per second per API key and per tenant (token buckets shared in Redis);
    `orchestrator limits rate set` overrides them for one tenant. A rate of 0 is no limit."""

    model_config = _config("RATE_LIMIT_")
    key_rate: float = Field(50.0, ge=0, description="Requests per second one API key may "
                            "make, sustained (0: no limit per key).")
    key_burst: int = Field(100, ge=1, description="Requests one API key may make at once "
                           "before RATE_LIMIT_KEY_RATE paces it (the bucket's size).")
    tenant_rate: float = Field(100.0, ge=0, description="Requests per second all the keys "
                               "of one tenant may make together, sustained (0: no limit).")
    tenant_burst: int = Field(200, ge=1, description="Requests all the keys of one tenant "
                              "may make at once (the tenant bucket's size).")


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
    approval_policy: Literal["any", "other-key", "scope"] = Field(
        "scope", description="Which key may approve or reject a held step: `scope` a key "
        "with the `approve` scope; `other-key` such a key other than the one that submitted "
        "the job (four eyes); `any` any key of the tenant that may write jobs or approve.")
    approval_ttl: float = Field(
        3600.0, gt=0, description="Seconds a held step waits for approval before it fails.")
    wait_timeout: float = Field(
        86400.0, gt=0, description="Longest a waiting step waits for its resume URL (s).")
    exposed_intents: StrList = Field(
        ["*", "!debug.*"], description="Glob patterns of the intents tenants see and may "
        "submit (`/v1/intents`, `/v1/tools`, MCP `tools/list`, `/v1/jobs`) and the planner is "
        "offered (comma-separated or a JSON list); a pattern starting with `!` hides what it "
        "matches, the last matching pattern decides. Internal steps (`llm.plan`, "
        "`llm.respond`, `debug.chain.link`) are never offered. `make run` and the tests set "
        "`[\"*\"]`.")
    debug_crash: bool = Field(
        False, description="Let `debug.crash` kill the worker process running it (to rehearse "
        "poison handling); off, it fails instead. Never on in production.")
    secret_key: StrList = Field(
        default_factory=list, repr=False, description="Fernet keys (URL-safe base64 of 32 "
        "bytes) that seal secrets at rest: approval and resume tokens in events, HTTP tools' "
        "headers. The first seals, every one opens: rotate by putting a new key first, then "
        "`orchestrator secrets rotate`. The API and workers need one; `make run` creates "
        "var/secret-key.")

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, keys: list[str]) -> list[str]:
        for n, key in enumerate(keys):
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(f"key {n + 1} is not a Fernet key (URL-safe base64 of 32 "
                                 "bytes; `orchestrator secrets new-key` prints one)") from None
        return keys


class WorkerSettings(BaseSettings):
    """Worker processes."""

    model_config = _config("WORKER_")
    heartbeat_seconds: float = Field(5.0, description="How often a worker reports it is alive.")
    lost_after: float = Field(
        45.0, gt=0, description="Seconds without a heartbeat after which a worker process "
        "counts as dead and the sweeper sends its running steps again.")
    send_events: bool = Field(
        False, description="Emit Celery task events: Flower's task views need them (`make run` "
        "turns them on when its Procfile runs Flower); off, a step costs three fewer Redis "
        "publishes.")


class LogSettings(BaseSettings):
    """Log lines of the API and the workers."""

    model_config = _config("LOG_")
    format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object a line, with `job_id`, `step`, `tenant` "
        "and `worker` where a step is being run; `text`: plain lines.")


class TelemetrySettings(BaseSettings):
    """OpenTelemetry traces (API → step → upstream call), off unless an endpoint is set."""

    model_config = _config("OTEL_")
    exporter_otlp_endpoint: str | None = Field(
        None, description="Base URL of an OTLP/HTTP collector (spans go to `<it>/v1/traces`); "
        "unset: no tracing.")
    service_name: str = Field("orchestrator", description="The service name spans carry "
                              "(each process adds its role: `-api`, `-worker`).")


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
        """The threads or processes of a worker of `pool`."""
        return {"llm": self.llm_concurrency, "tools": self.tools_concurrency,
                "memory": self.memory_concurrency, "flow": self.flow_concurrency,
                "callbacks": self.callbacks_concurrency}[pool]


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
    overrides: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Consecutive failures that open the breakers of one "
        "kind of upstream, by the part of its name before the first colon (JSON, e.g. "
        '{"ssh": 3, "flow": 2, "http": 10}); others use BREAKER_FAIL_MAX.')

    def fail_max_of(self, upstream: str) -> int:
        """The failures that open `upstream`'s breaker (its kind's override, or the default)."""
        return self.overrides.get(upstream.split(":", 1)[0], self.fail_max)


class CallbackSettings(BaseSettings):
    """Signed callback delivery."""

    model_config = _config("CALLBACK_")
    timeout: float = Field(15.0, gt=0, description="Seconds one delivery attempt may take.")
    max_response_bytes: int = Field(
        64 * 1024, description="Bytes of a receiver's response body read and kept.")
    schedule: Annotated[list[float], NoDecode, BeforeValidator(_list_setting)] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        description="Seconds to wait before each retry after a failed attempt (comma-separated "
        "or a JSON list), e.g. 5,300,1800.")
    allowed_networks: StrList = Field(
        [], description="CIDRs tenant-supplied URLs (callbacks, http.request, HTTP tools) may "
        "reach although private (comma-separated or a JSON list), e.g. 127.0.0.0/8,10.0.0.0/8.")
    sweep_seconds: float = Field(
        5.0, gt=0, description="How often the sweeper sends deliveries that are due.")
    concurrency: int = Field(
        64, ge=1, le=1024, description="Callback attempts in flight at once, per callbacks "
        "worker process (one drainer at a time claims due deliveries in batches this size).")
    secret_overlap: float = Field(
        86400.0, gt=0, description="Seconds the previous webhook secret still signs callbacks "
        "after a rotation (alongside the new one).")

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


class FlowSettings(BaseSettings):
    """Workflow engines (n8n, ActivePieces) and the named flows that run on them."""

    model_config = _config("FLOW_")
    n8n_webhook_base: str = Field(
        "", validation_alias=AliasChoices("N8N_WEBHOOK_BASE"),
        description="n8n's webhook base URL, e.g. http://127.0.0.1:5678/webhook; empty: n8n "
        "flows answer 422 until it is set.")
    activepieces_base: str = Field(
        "", validation_alias=AliasChoices("ACTIVEPIECES_BASE"),
        description="ActivePieces' webhook base URL, e.g. https://cloud.activepieces.com/api/v1"
        "/webhooks; empty: ActivePieces flows answer 422 until it is set.")
    timeout: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("ORCHESTRATOR_FLOW_TIMEOUT"),
        description="Seconds a flow has to answer its webhook call (a 202 within it makes the "
        "step wait for its resume URL instead).")
    flows_file: str = Field(
        "", validation_alias=AliasChoices("FLOWS_FILE"),
        description="A JSON file listing flows (name, engine, path, mode, timeout, wait, "
        "input_schema, tenants, description); they are added to the built-in examples.")


class AgentSettings(BaseSettings):
    """External agents reached over their SSE `/invoke` endpoint."""

    model_config = _config("AGENT_")
    timeout_ms: int = Field(300000, gt=0, description="Longest an agent run may stream (ms).")
    health_timeout: float = Field(
        5.0, gt=0, description="Seconds an agent has to answer GET /health (registration, health).")


class McpSettings(BaseSettings):
    """MCP servers whose tools become intents `mcp.<server>.<tool>`."""

    model_config = _config("MCP_")
    servers_file: str = Field(
        "", description="A JSON file listing MCP servers: name, command (a list: argv of a "
        "stdio server) or url (streamable HTTP), env, tenants (ids; null: all), timeout (s).")
    timeout: float = Field(30.0, gt=0, description="Seconds one MCP tool call may take.")
    discovery_timeout: float = Field(
        20.0, gt=0, description="Seconds a server has to list its tools when a worker starts.")


class LlmSettings(BaseSettings):
    """The OpenAI-compatible model that plans prompts and writes answers (a trusted upstream).

    Reference 000's `OPENROUTER_*` and 002's `LLM_DEFAULT_MODEL` are accepted as aliases.
    """

    model_config = _config("LLM_")
    base_url: str = Field(
        "https://openrouter.ai/api/v1",
        validation_alias=AliasChoices("LLM_BASE_URL", "OPENROUTER_URL"),
        description="OpenAI-compatible API root (OpenRouter, OpenAI, vLLM, Ollama, llama.cpp); "
        "a trailing `/chat/completions` is dropped.")
    api_key: str = Field(
        "", validation_alias=AliasChoices("LLM_API_KEY", "OPENROUTER_API_KEY"),
        description="Bearer key; empty means no model: the rule-based planner answers (any "
        "value for local servers without auth).")
    model: str = Field(
        "google/gemini-2.0-flash-exp",
        validation_alias=AliasChoices("LLM_MODEL", "OPENROUTER_MODEL", "LLM_DEFAULT_MODEL"),
        description="Model name sent with every request.")
    timeout: float = Field(60.0, gt=0, description="Seconds one model call may take.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the server.")
    response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema", description="How a plan is asked for; `json_schema` falls back to "
        "`json_object` (once per process) when the server refuses it.")
    max_tokens: int = Field(1024, ge=1, description="Most tokens of one answer or plan.")
    context_tokens: int = Field(
        0, ge=0, description="Tokens the model's context holds (prompt and answer); 0: what "
        "the server says (llama.cpp `/props`, `/v1/models` meta), else 8192.")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    history_turns: int = Field(10, ge=0, description="Recent session messages given to the "
                               "planner and the answer.")
    max_plan_steps: int = Field(8, ge=1, description="Most steps one plan may add.")
    plan_intents: list[str] = Field(
        ["*"], description="Glob patterns of the intents the planner may use (JSON list); "
        "`llm.*` never.")
    plan_destructive: bool = Field(
        False, description="Let the planner use destructive intents (`memory.delete`, "
        "`ssh.exec`); their steps are then held by the intent's own approval rules.")
    prices: dict[str, dict[str, float]] = Field(
        {}, description='USD per million tokens by model (JSON), e.g. '
        '`{"gpt-4o-mini": {"prompt": 0.15, "completion": 0.6}}`; unknown models cost 0.')

    @field_validator("base_url")
    @classmethod
    def _api_root(cls, value: str) -> str:
        return value.rstrip("/").removesuffix("/chat/completions")

    @property
    def enabled(self) -> bool:
        """Whether a model is configured (else the rule-based planner is used)."""
        return bool(self.api_key)


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
DANGEROUS_PATTERNS = [
    r"\brm\s+(-\w*[rR]|--recursive)", r"\bmkfs\b", r"\bdd\b", r"\bshutdown\b",
    r"\breboot\b", r"\bhalt\b", r"\bpoweroff\b", r"\binit\s+[06]\b",
    r"\bch(mod|own|grp)\s+(-\w*R|--recursive)", r"\b(ip6?tables|nft|ufw)\b",
    r"\bkill\s+(-9|-KILL|-SIGKILL|-s\s+KILL)\b", r"\b(killall|pkill)\b",
    r">>?\s*/etc/", r"\btee\s+(-\w+\s+)*/etc/", r"\b(mv|cp|ln|rm|truncate|sed\s+-i)\b.*\s/etc/",
    r"\bsystemctl\s+(stop|disable|mask|kill|isolate|poweroff|reboot)\b", r"\bcrontab\s+-r\b",
    r"\b(wipefs|fdisk|parted|sfdisk|userdel|deluser)\b", r">\s*/dev/(sd|nvme|vd|xvd)",
    r":\(\)\s*\{"]
PEEK_PATHS = ["/var/log/", "/proc/loadavg", "/proc/meminfo", "/proc/uptime", "/etc/hostname",
              "/etc/os-release"]


class SshSettings(BaseSettings):
    """Commands on remote hosts over SSH: the hosts, the limits, what needs approval."""

    model_config = _config("SSH_")
    hosts: str = Field(
        "", description="Hosts as a JSON list of {name, address, port, user, key_file, "
        "known_hosts, tenants} (tenants: tenant ids, or [\"*\"] for all), added to those of "
        "SSH_HOSTS_FILE.")
    hosts_file: str = Field("", description="A JSON file listing hosts in the form of SSH_HOSTS.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open the TCP connection.")
    banner_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the SSH banner.")
    auth_timeout: float = Field(10.0, gt=0, description="Seconds authentication may take.")
    command_timeout: float = Field(
        60.0, gt=0, description="Default deadline of a command (s); a step's `timeout` may ask "
        "for another. At the deadline the remote command is killed and the step fails.")
    max_output_bytes: int = Field(
        1024 * 1024, ge=1, description="Bytes of stdout and of stderr kept each; the rest is "
        "read and dropped, and the output is marked truncated.")
    idle_connections: int = Field(
        4, ge=0, description="Open connections kept per host in each worker process.")
    dangerous_patterns: StrList = Field(
        DANGEROUS_PATTERNS, description="Regular expressions (a JSON list) of commands that "
        "`ssh.exec` holds for approval even with confirm_dangerous=true.")
    peek_paths: StrList = Field(
        PEEK_PATHS, description="Files `ssh.exec.peek` may cat/tail/head (comma-separated or a "
        "JSON list); an entry ending in / allows everything under it.")

    @field_validator("dangerous_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from exc
        return value


class HttpSettings(BaseSettings):
    """Calls to tenant-supplied URLs: `http.request` and registered HTTP tools."""

    model_config = _config("HTTP_")
    timeout: float = Field(30.0, gt=0, description="Default seconds one call may take; a tool's "
                           "own timeout may be shorter.")
    max_response_bytes: int = Field(
        1024 * 1024, ge=1, description="Bytes of an answer kept; the rest is cut off and the "
        "output marked truncated.")


class LimitSettings(BaseSettings):
    """Concurrency limits and model budgets every tenant gets unless the store has its own
    (`orchestrator limits concurrency|budget set`)."""

    model_config = _config("LIMITS_")
    concurrency: dict[str, int] = Field(
        {}, description='Steps of one tenant that may run at once, by intent or glob (JSON), '
        'e.g. `{"ssh.exec": 5, "agent.*": 2}`; a tenant\'s own rule for a pattern replaces '
        "this one; the most specific matching pattern decides; none: unlimited.")
    budget_day_usd: float = Field(0.0, ge=0, description="USD of model use a tenant may spend "
                                  "per UTC day (from LLM_PRICES); 0: unlimited.")
    budget_month_usd: float = Field(0.0, ge=0, description="USD of model use a tenant may spend "
                                    "per UTC calendar month; 0: unlimited.")
    budget_day_tokens: int = Field(0, ge=0, description="Model tokens (prompt and completion) "
                                   "a tenant may use per UTC day; 0: unlimited.")
    budget_month_tokens: int = Field(0, ge=0, description="Model tokens a tenant may use per "
                                     "UTC calendar month; 0: unlimited.")

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, rules: dict[str, int]) -> dict[str, int]:
        bad = [pattern for pattern, most in rules.items() if most < 1]
        if bad:
            raise ValueError(f"limits must be 1 or more (remove a pattern to lift it): {bad}")
        return rules


class Settings(BaseSettings):
    """Every concern's settings."""

    model_config = _config("")
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    broker: BrokerSettings = Field(default_factory=lambda: BrokerSettings())
    rate_limit: RateLimitSettings = Field(default_factory=lambda: RateLimitSettings())
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings())
    orchestrator: OrchestratorSettings = Field(default_factory=lambda: OrchestratorSettings())
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    pool: PoolSettings = Field(default_factory=lambda: PoolSettings())
    flower: FlowerSettings = Field(default_factory=lambda: FlowerSettings())
    retry: RetrySettings = Field(default_factory=lambda: RetrySettings())
    breaker: BreakerSettings = Field(default_factory=lambda: BreakerSettings())
    callback: CallbackSettings = Field(default_factory=lambda: CallbackSettings())
    flow: FlowSettings = Field(default_factory=lambda: FlowSettings())
    agent: AgentSettings = Field(default_factory=lambda: AgentSettings())
    mcp: McpSettings = Field(default_factory=lambda: McpSettings())
    llm: LlmSettings = Field(default_factory=lambda: LlmSettings())
    embeddings: EmbeddingsSettings = Field(default_factory=lambda: EmbeddingsSettings())
    memory: MemorySettings = Field(default_factory=lambda: MemorySettings())
    ssh: SshSettings = Field(default_factory=lambda: SshSettings())
    http: HttpSettings = Field(default_factory=lambda: HttpSettings())
    limits: LimitSettings = Field(default_factory=lambda: LimitSettings())
    log: LogSettings = Field(default_factory=lambda: LogSettings())
    telemetry: TelemetrySettings = Field(default_factory=lambda: TelemetrySettings())

    @model_validator(mode="after")
    def _limits_below_visibility(self) -> "Settings":
        pool, visibility = self.pool, self.broker.visibility_timeout
        if not pool.soft_time_limit < pool.time_limit < visibility:
            raise ValueError(
                f"POOL_SOFT_TIME_LIMIT ({pool.soft_time_limit:g}) < POOL_TIME_LIMIT "
                f"({pool.time_limit:g}) < BROKER_VISIBILITY_TIMEOUT ({visibility}) must hold, "
                "so that no running step is redelivered for being slow")
        return self


SECTIONS: list[type[BaseSettings]] = [
    ApiSettings, BrokerSettings, RateLimitSettings, DatabaseSettings, OrchestratorSettings,
    WorkerSettings, PoolSettings, FlowerSettings, RetrySettings, BreakerSettings,
    CallbackSettings, FlowSettings, AgentSettings, McpSettings, LlmSettings, EmbeddingsSettings,
    MemorySettings, SshSettings, HttpSettings, LimitSettings, LogSettings, TelemetrySettings]


def env_name(section: type[BaseSettings], field: str) -> str:
    """The environment variable a field is read from."""
    alias = section.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{section.model_config.get('env_prefix', '')}{field}".upper()


def _problem(exc: ValidationError) -> str:
    """One line per invalid setting: the variable, what it was, what is wanted."""
    section = next((s for s in SECTIONS if s.__name__ == exc.title), None)
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        if section is None or field not in section.model_fields:
            what = f"invalid setting {field}" if field else "invalid settings"
            lines.append(f"{what}: {err['msg'].removeprefix('Value error, ')}")
            continue
        wanted = section.model_fields[field].description
        item = "".join(f"[{part}]" for part in err["loc"][1:])
        # A secret (a field not in its repr) is not echoed into logs.
        given = repr(err["input"]) if section.model_fields[field].repr else "<hidden>"
        lines.append(f"invalid setting {env_name(section, field)}{item}={given}: "
                     f"{err['msg'].removeprefix('Value error, ')}. Expected: {wanted}")
    return "; ".join(lines)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once; an invalid one raises ConfigError naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_problem(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
