"""Job-store tables (SQLModel): the job, its step ledger, its event log, tenants and keys."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, false
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now: the one clock every row uses."""
    return datetime.now(UTC)


class JobStatus(StrEnum):
    """Where a job is in its life."""

    queued = "queued"
    running = "running"
    awaiting_approval = "awaiting_approval"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class PoolName(StrEnum):
    """The worker pools a step may run on (tasks/engine/pools.py says how each runs)."""

    llm = "llm"
    tools = "tools"
    memory = "memory"
    flow = "flow"
    callbacks = "callbacks"


class Effect(StrEnum):
    """What running an intent does to the world: the default idempotency key deduplicates
    `write`s only; a `read` runs again each time unless the caller sends `Idempotency-Key`."""

    read = "read"
    write = "write"


class StepStatus(StrEnum):
    """Where one step is in its life."""

    pending = "pending"
    running = "running"
    held = "held"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STEPS


FINISHED_STEPS = frozenset({StepStatus.succeeded, StepStatus.failed, StepStatus.cancelled})


class EventType(StrEnum):
    """What an event in a job's log says happened (its `type`)."""

    job_queued = "job_queued"
    job_started = "job_started"
    job_succeeded = "job_succeeded"
    job_failed = "job_failed"
    job_cancelled = "job_cancelled"
    job_requeued = "job_requeued"
    job_retried = "job_retried"
    step_started = "step_started"
    step_succeeded = "step_succeeded"
    step_failed = "step_failed"
    step_retrying = "step_retrying"
    step_requeued = "step_requeued"
    step_throttled = "step_throttled"
    step_output = "step_output"
    step_output_replaced = "step_output_replaced"
    step_held = "step_held"
    step_approved = "step_approved"
    step_rejected = "step_rejected"
    step_waiting = "step_waiting"
    step_resumed = "step_resumed"
    step_expired = "step_expired"
    command_executed = "command_executed"
    plan_created = "plan_created"
    plan_extended = "plan_extended"
    plan_rejected = "plan_rejected"
    llm_delta = "llm_delta"
    agent_invoke_started = "agent_invoke_started"
    agent_invoke_done = "agent_invoke_done"
    agent_stream_delta = "agent_stream_delta"
    callback_scheduled = "callback_scheduled"
    callback_succeeded = "callback_succeeded"
    callback_failed = "callback_failed"
    callback_dead = "callback_dead"


TERMINAL_EVENTS = frozenset({EventType.job_succeeded, EventType.job_failed,
                             EventType.job_cancelled})
"""The events that end a job's log: a follower stops at one of them."""


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


class Tenant(SQLModel, table=True):
    """A customer: owns API keys, jobs and the secret its callbacks are signed with."""

    __tablename__ = "tenants"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(unique=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    # Sealed by the vault (see core/vault.py), hence longer than the `whsec_` secret itself.
    webhook_secret: str = Field(default="", max_length=512)
    previous_webhook_secret: str | None = Field(default=None, max_length=512)
    previous_secret_expires_at: datetime | None = None
    operator: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class Scope(StrEnum):
    """What an API key may do (README: "API keys, scopes and limits")."""

    jobs_write = "jobs:write"
    jobs_read = "jobs:read"
    approve = "approve"
    registry_write = "registry:write"
    memory_write = "memory:write"
    admin = "admin"
    operator = "operator"


ALL_SCOPES = frozenset(Scope)
# A new key's scopes unless others are asked for: submit and follow jobs, nothing more.
DEFAULT_SCOPES = frozenset({Scope.jobs_write, Scope.jobs_read})


class ApiKey(SQLModel, table=True):
    """A bearer key of a tenant, stored only as its SHA-256."""

    __tablename__ = "api_keys"
    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=64)
    key_hash: str = Field(unique=True, max_length=64)
    name: str = Field(default="", max_length=200)
    # Space-separated `Scope` values (one column both stores read the same way).
    scopes: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class TenantLimits(SQLModel, table=True):
    """A tenant's own request rates, overriding the RATE_LIMIT_* settings where set."""

    __tablename__ = "tenant_limits"
    tenant_id: str = Field(foreign_key="tenants.id", primary_key=True, max_length=64)
    key_rate: float | None = None
    key_burst: int | None = None
    tenant_rate: float | None = None
    tenant_burst: int | None = None


KEY_ID = "api_key_id"  # in a job's `context`: the id of the API key that submitted it (audit)


class Job(SQLModel, table=True):
    """One submitted intent and its outcome."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_tenant_created", "tenant_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=64)
    intent: str = Field(index=True, max_length=200)
    mode: str = Field(max_length=16)
    status: JobStatus = Field(default=JobStatus.queued, index=True, max_length=24)
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: Any = _json()
    error: str | None = None
    progress: float = 0.0
    event_seq: int = 0
    idempotency_key: str | None = Field(default=None, max_length=128)
    callback_url: str | None = Field(default=None, max_length=2048)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobStep(SQLModel, table=True):
    """One step of a job's chain: the ledger row that keeps a redelivered step from repeating."""

    __tablename__ = "job_steps"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_job_steps_job_index"),
                      Index("ix_job_steps_status", "status"))
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=40)
    index: int
    intent: str = Field(max_length=200)
    pool: str = Field(max_length=32)
    status: StepStatus = Field(default=StepStatus.pending, max_length=16)
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    attempts_base: int = Field(default=0, sa_column_kwargs={"server_default": "0"},
                               description="Its attempts when its job was last retried: the "
                               "poison limit counts the deliveries since.")
    output: Any = _json()
    error: str | None = None
    runner: str | None = Field(default=None, max_length=200,
                               description="The worker process running it (host:pid/start; "
                               "`start` is new at each process start).")
    reason: str | None = Field(default=None, description="Why it is held or waiting.")
    token_hash: str | None = Field(default=None, max_length=64, index=True,
                                   description="SHA-256 of its approval or resume token.")
    deadline: datetime | None = Field(default=None, description="When holding or waiting ends.")
    approved_at: datetime | None = None
    early_output: Any = _json()
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobEvent(SQLModel, table=True):
    """An append-only record of something that happened to a job; `seq` rises per job."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=40)
    seq: int
    type: str = Field(max_length=64)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class IdempotencyRecord(SQLModel, table=True):
    """Maps a tenant's idempotency key to the job it created, until it expires."""

    __tablename__ = "idempotency_keys"
    tenant_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=128)
    job_id: str = Field(foreign_key="jobs.id", max_length=40)
    expires_at: datetime


class DeliveryStatus(StrEnum):
    """Where a callback delivery is."""

    pending = "pending"
    sending = "sending"
    succeeded = "succeeded"
    dead = "dead"


class Delivery(SQLModel, table=True):
    """A callback to send (the outbox row); its id is the `webhook-id` of every attempt."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)
    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="jobs.id", index=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=64)
    url: str = Field(max_length=2048)
    body: str
    status: DeliveryStatus = Field(default=DeliveryStatus.pending, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class DeliveryAttempt(SQLModel, table=True):
    """One try at sending a delivery."""

    __tablename__ = "delivery_attempts"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(foreign_key="deliveries.id", index=True, max_length=40)
    number: int
    started_at: datetime = Field(default_factory=utcnow)
    status_code: int | None = None
    latency_ms: int = 0
    error: str | None = None


class Agent(SQLModel, table=True):
    """An external agent a tenant registered: its SSE `/invoke` endpoint is intent `agent.<id>`."""

    __tablename__ = "agents"
    tenant_id: str = Field(foreign_key="tenants.id", primary_key=True, max_length=64)
    agent_id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    endpoint: str = Field(max_length=2048)
    created_at: datetime = Field(default_factory=utcnow)


class ChatSession(SQLModel, table=True):
    """A conversation of one tenant: its messages, and who and what memory it is about."""

    __tablename__ = "chat_sessions"
    tenant_id: str = Field(foreign_key="tenants.id", primary_key=True, max_length=64)
    id: str = Field(primary_key=True, max_length=128)
    twin_id: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=200)
    namespace: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ChatMessage(SQLModel, table=True):
    """One message of a session: the user's, the assistant's, or a tool step's result."""

    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_messages_session", "tenant_id", "session_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(max_length=64)
    session_id: str = Field(max_length=128)
    job_id: str | None = Field(default=None, max_length=40, index=True)
    role: str = Field(max_length=16)
    content: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class HttpTool(SQLModel, table=True):
    """An HTTP tool a tenant registered: the intent `tool.<name>`, for that tenant only."""

    __tablename__ = "http_tools"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_http_tools_tenant_name"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=64)
    name: str = Field(max_length=100)
    description: str = Field(default="", max_length=1000)
    method: str = Field(max_length=8)
    url: str = Field(max_length=2048, description="URL template: `{field}` takes an input.")
    host: str = Field(max_length=253, description="The URL's host (its breaker's name).")
    headers: dict[str, str] = Field(default_factory=dict,
                                    sa_column=Column(JSON, nullable=False))
    input_schema: dict[str, Any] = Field(default_factory=dict,
                                         sa_column=Column(JSON, nullable=False))
    timeout: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ConcurrencyLimit(SQLModel, table=True):
    """A tenant's rule: at most `max_running` steps whose intent matches `pattern` at once."""

    __tablename__ = "concurrency_limits"
    tenant_id: str = Field(foreign_key="tenants.id", primary_key=True, max_length=64)
    pattern: str = Field(primary_key=True, max_length=200,
                         description="An intent (`ssh.exec`) or a glob (`agent.*`).")
    max_running: int
    created_at: datetime = Field(default_factory=utcnow)


class TenantQuota(SQLModel, table=True):
    """A tenant's model budget per UTC day and month, in USD and tokens (0: unlimited)."""

    __tablename__ = "tenant_quotas"
    tenant_id: str = Field(foreign_key="tenants.id", primary_key=True, max_length=64)
    day_usd: float = 0.0
    month_usd: float = 0.0
    day_tokens: int = 0
    month_tokens: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
