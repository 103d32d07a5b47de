"""Request and response bodies of the API."""

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Header, Path
from pydantic import (
    AfterValidator,
    AliasChoices,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    UrlConstraints,
    field_validator,
    model_validator,
)

from core.models import Effect, Job, JobStatus, JobStep, StepStatus, utcnow

Mode = Literal["auto", "agent", "flow", "mcp"]
MAX_JSON_DEPTH = 32


def _too_deep(limit: int) -> str:
    return f"nested deeper than {limit} levels; flatten it"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "\\u0000 (NUL) cannot be stored (Postgres text refuses it); remove it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ("a lone surrogate (like \\ud800) is not Unicode text; send the character "
                "itself or a surrogate pair")
    return None


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, float) and not math.isfinite(item):
        return f"{item} is not a JSON number; send a finite number or null"
    return _text_problem(item) if isinstance(item, str) else None


@dataclass(frozen=True)
class JsonFault:
    """Where a JSON value breaks the storage rule (`path` from its root) and why."""

    path: tuple[str | int, ...]
    reason: str

    def __str__(self) -> str:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        return f"{self.reason} (at ${where})" if self.path else self.reason


def json_fault(value: Any, limit: int = MAX_JSON_DEPTH) -> JsonFault | None:
    """The first place `value` may not be stored as JSON, or None: nested deeper than `limit`,
    NaN or ±Infinity, or a string (value or key) holding NUL or a lone surrogate.

    The one rule of every JSON the API stores: request bodies (api/deps.py), chat WebSocket
    messages and `/mcp` requests. Size is the body limit (API_MAX_BODY_BYTES) of each.
    """
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while pending:
        item, path = pending.pop()
        if isinstance(item, dict | list):
            if len(path) >= limit:
                return JsonFault((), _too_deep(limit))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and (problem := _text_problem(key)):
                    return JsonFault(path, f"a key: {problem}")
                pending.append((child, (*path, key)))
        elif problem := _scalar_problem(item):
            return JsonFault(path, problem)
    return None


def json_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why `value` may not be stored as JSON (see `json_fault`), or None."""
    fault = json_fault(value, limit)
    return None if fault is None else str(fault)


def loads_checked(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """`text` parsed as JSON under `json_fault`'s rule; ValueError says why it is refused."""
    try:
        value = json.loads(text)
    except RecursionError:
        # Deeper than the parser can follow is deeper than the limit too.
        raise ValueError(_too_deep(limit)) from None
    if problem := json_problem(value, limit):
        raise ValueError(problem)
    return value


# A JSON object a request stores; the body rule (api/deps.py) has checked it at the door.
StoredJson = dict[str, Any]
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# The host is group 1 (a plain group: the pattern is also the OpenAPI `pattern`, an ECMA regex).
HTTP_URL = (rf"^[hH][tT][tT][pP][sS]?://({_LABEL}(?:\.{_LABEL})*\.?"
            rf"|\[[0-9A-Fa-f:.]{{2,45}}\])(?::{_PORT})?(?:[/?#][^\s\x00-\x1F\x7F]*)?$")
URL_RULE = ("must be an http(s) URL without credentials whose host is a DNS name (labels of at "
            "most 63 letters, digits, '-' or '_'), an IPv4 address or a bracketed IPv6 "
            "address, with a port up to 65535, and no control characters (`{field}` may fill the "
            "path and query, not the host)")


def _http_url(url: str) -> str:
    found = re.match(HTTP_URL, url)
    if found is None:
        raise ValueError(URL_RULE)
    host = found.group(1)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address") from None
    return url


# An http(s) URL a tenant registers: the rule is in the schema (`pattern`), and said plainly.
HttpUrlText = Annotated[str, AfterValidator(_http_url), Field(
    min_length=1, max_length=2048, json_schema_extra={"pattern": HTTP_URL})]
# RFC 7230: a header name is a token; a value is visible ASCII, spaces and tabs.
HeaderName = Annotated[str, Field(min_length=1, max_length=256,
                                  pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
HeaderValue = Annotated[str, Field(max_length=8192, pattern=r"^[\t\x20-\x7E]*$")]
Wait = Annotated[float, Field(allow_inf_nan=False)] | bool
CallbackUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048)]  # the store's column
MAX_EVENT_ID = 2**31 - 1  # job_events.seq is an INTEGER column
JobIdPath = Annotated[str, Path(description="The job's id (`job_id` in every answer).")]
IdempotencyKey = Annotated[str | None, Header(
    max_length=128, description="Makes a retried request answer the job it created the first "
    "time (within ORCHESTRATOR_IDEMPOTENCY_WINDOW); without it, the same tenant, intent and "
    "inputs count as a repeat.")]
LastEventId = Annotated[int | None, Header(
    ge=0, le=MAX_EVENT_ID, description="Resume an SSE stream after this event id (sent by "
    "EventSource on reconnect); wins over `after`.")]
PROMPT_INTENT = "llm.plan"


def _intent_or_prompt_schema(schema: dict[str, Any]) -> None:
    """State the rule in the schema: exactly one of `intent` and `prompt`, each a string."""
    for name in ("intent", "prompt"):
        field = schema["properties"][name]
        string = next(s for s in field.pop("anyOf") if s.get("type") == "string")
        field.update(string)
        field.pop("default", None)
    schema["oneOf"] = [{"required": ["intent"]}, {"required": ["prompt"]}]


class JobCreate(BaseModel):
    """Submit an intent with its inputs, or a free-text prompt for the LLM planner."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_intent_or_prompt_schema)
    intent: str | None = Field(None, min_length=1, max_length=200, examples=["debug.echo"],
                               description="A registered intent name (`GET /v1/intents`), "
                               "or send `prompt`.")
    prompt: str | None = Field(None, min_length=1, max_length=20000, description=(
        "Free text instead of `intent`: the job is one `llm.plan` step that plans it, runs "
        "the plan and answers; `inputs` may add `session_id`, `namespace`, `twin_id`, "
        "`user_id`."))
    inputs: StoredJson = Field(default_factory=dict,
                               description="The intent's inputs, per its JSON input schema.")
    mode: Mode = Field("auto", description="Execution mode; `auto` takes the intent's own.")
    callback_url: CallbackUrl | None = Field(None,
                                             description="Where the outcome is delivered.")
    context: StoredJson = Field(default_factory=dict, description="Tracing metadata.")
    wait: Wait = Field(
        False, description="Seconds to wait for the result (true: the server's sync timeout)."
    )

    @field_validator("intent", "prompt", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("send a string, or leave the field out")
        return value

    @model_validator(mode="after")
    def _intent_or_prompt(self) -> "JobCreate":
        if (self.intent is None) == (self.prompt is None):
            raise ValueError("send either `intent` or `prompt`")
        return self

    def target(self) -> tuple[str, dict[str, Any]]:
        """The intent to submit and its inputs: a prompt is an `llm.plan` job."""
        if self.prompt is not None:
            return PROMPT_INTENT, {**self.inputs, "prompt": self.prompt}
        return str(self.intent), self.inputs


MAX_BATCH = 1000


class IntentCall(BaseModel):
    """An intent with its inputs and mode: what a submission names."""

    model_config = ConfigDict(extra="forbid")
    intent: str = Field(min_length=1, max_length=200, examples=["debug.echo"],
                        description="A registered intent name (`GET /v1/intents`).")
    inputs: StoredJson = Field(default_factory=dict,
                               description="The intent's inputs, per its JSON input schema.")
    mode: Mode = Field("auto", description="Execution mode; `auto` takes the intent's own.")


class BatchJobCreate(IntentCall):
    """One job of a batch: an intent with its inputs (a prompt or `wait` is for `/v1/jobs`)."""

    callback_url: CallbackUrl | None = Field(None, description="Where the outcome is delivered.")
    context: StoredJson = Field(default_factory=dict, description="Tracing metadata.")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=128, description="This job's `Idempotency-Key`: a repeat "
        "(in this batch or a later request, within ORCHESTRATOR_IDEMPOTENCY_WINDOW) answers "
        "the job it created; without it, the same tenant, intent and inputs of a write count "
        "as a repeat.")


class JobBatchCreate(BaseModel):
    """Up to 1,000 jobs, stored in one transaction and sent in one broker connection."""

    model_config = ConfigDict(extra="forbid")
    jobs: list[BatchJobCreate] = Field(min_length=1, max_length=MAX_BATCH,
                                       description="The jobs, each answered in this order.")


class Links(BaseModel):
    """Where to follow a job."""

    self: str
    events: str
    cancel: str


class StepPublic(BaseModel):
    """One step of a job."""

    index: int
    intent: str
    pool: str
    status: StepStatus
    attempts: int
    worker: str | None = Field(None, validation_alias=AliasChoices("worker", "runner"),
                               description="The worker process (host:pid) that ran it last.")
    output: Any = None
    error: str | None = None
    reason: str | None = Field(None, description="Why it is held or waiting.")
    deadline: datetime | None = Field(None, description="When a hold or wait ends (it fails).")
    approved_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Deduplication(BaseModel):
    """Whether a submission was answered with an earlier job (a repeated write, or a repeated
    `Idempotency-Key`) instead of starting one."""

    deduplicated: bool = Field(False, description=(
        "True when this answer is an earlier job's: the same `Idempotency-Key`, or the same "
        "write (tenant, intent, inputs) within the idempotency window. Reads always run anew "
        "unless keyed."))
    original_job_id: str | None = Field(None, description="The earlier job's id, when "
                                        "deduplicated.")
    age_seconds: float | None = Field(None, description="How long ago the earlier job was "
                                      "submitted (s), when deduplicated.")


def deduplication(job: Job, created: bool) -> dict[str, Any]:
    """The `Deduplication` fields of a submission's answer."""
    if created:
        return {}
    submitted = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
    age = max(0.0, (utcnow() - submitted).total_seconds())
    return {"deduplicated": True, "original_job_id": job.id, "age_seconds": round(age, 3)}


class JobAccepted(Deduplication):
    """A job that was accepted and is on its way."""

    job_id: str
    status: JobStatus
    intent: str
    mode: str
    links: Links


class JobPublic(Deduplication):
    """A job: status, progress, steps, result and timings."""

    job_id: str
    intent: str
    mode: str
    status: JobStatus
    progress: float
    inputs: dict[str, Any]
    context: dict[str, Any]
    result: Any = None
    error: str | None = None
    callback_url: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    steps: list[StepPublic] = Field(default_factory=list)
    usage: dict[str, Any] | None = Field(None, description=(
        "Model tokens, cost (USD, from LLM_PRICES) and model seconds, summed over the steps "
        "whose output carries `usage`."))
    pending: dict[str, Any] | None = Field(None, description=(
        "What a held or waiting step waits for: for `held`, the approval `token`, `reason`, "
        "`inputs` and `expires_at`; for `waiting`, the `resume_url` and `deadline`."))
    links: Links


class JobPage(BaseModel):
    """A page of jobs, newest first."""

    items: list[JobPublic]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class EventPublic(BaseModel):
    """An event in a job's log."""

    id: int = Field(description="Rises by one per event of this job; the SSE `id`.")
    job_id: str
    type: str
    data: dict[str, Any]
    time: str


class IntentPublic(BaseModel):
    """A registered intent."""

    name: str
    pool: str
    mode: str
    description: str
    dangerous: bool = Field(False, description="Whether its steps may be held for approval.")
    effect: Effect = Field(Effect.write, description=(
        "`read` or `write`: a repeated write (same tenant, intent and inputs within the "
        "idempotency window) answers the earlier job; a read runs again unless the caller sends "
        "`Idempotency-Key`. `http.request` is a read with GET or HEAD."))
    timeout: float | None = Field(None, description="Seconds a step may run (else the pool's).")
    input_schema: dict[str, Any]


class ApprovalRequest(BaseModel):
    """Approve a held step with the token issued for it."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200, description=(
        "The approval token from the job's `pending.token` (or its `step_held` event); it "
        "approves only that step's exact intent and inputs, once, until it expires."))


class RejectionRequest(BaseModel):
    """Reject a held step."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("rejected", min_length=1, max_length=1000,
                        description="Why; the step and the job fail with it.")


class ResumeAccepted(BaseModel):
    """A waiting step was resumed with the posted body as its output."""

    status: Literal["resumed"] = "resumed"
    job_id: str
    index: int


class ErrorBody(BaseModel):
    """What every error answers."""

    error: str = Field(description="What went wrong and what to fix.")
    detail: Any = Field(None, description="For 422: each problem as `{field, message}`.")
    field: str | None = Field(None, description="For 422: the field at fault, when one is.")
    available: list[str] | None = Field(
        None, description="For an unknown intent (404): the registered intents.")


class OrchestrateRequest(IntentCall):
    """The `/orchestrate` contract's request."""

    callback_url: CallbackUrl | None = Field(
        None, description="Where the outcome is delivered, signed (Standard Webhooks); with it "
        "the answer is always `accepted`.")
    context: StoredJson = Field(default_factory=dict,
                                description="Tracing metadata, stored with the job.")


class OrchestrateSync(Deduplication):
    """The `/orchestrate` answer when the job ended within the sync timeout."""

    status: Literal["success", "error", "cancelled"]
    result: Any = None
    error: str | None = None
    mode: str
    duration_ms: int
    job_id: str


class OrchestrateAccepted(Deduplication):
    """The `/orchestrate` answer when the job goes on asynchronously."""

    status: Literal["accepted"] = "accepted"
    job_id: str
    message: str = "Job accepted for async processing"
    mode: str
    callback_url: str | None = None


class CompatJob(BaseModel):
    """`GET /jobs/{id}` of the `/orchestrate` contract."""

    job_id: str
    status: JobStatus
    intent: str
    mode: str
    result: Any = None
    error: str | None = None
    duration_ms: int | None = None


class JobBatchAccepted(BaseModel):
    """The jobs of a batch, in the order they were sent: each accepted or deduplicated."""

    jobs: list[JobAccepted]


def links_for(job_id: str) -> Links:
    root = f"/v1/jobs/{job_id}"
    return Links(self=root, events=f"{root}/events", cancel=f"{root}/cancel")


def duration_ms(job: Job) -> int | None:
    if job.finished_at is None:
        return None
    return int((job.finished_at - job.created_at).total_seconds() * 1000)


def job_public(job: Job, steps: list[JobStep],
               pending: dict[str, Any] | None = None) -> JobPublic:
    """The public view of a stored job and its steps."""
    return JobPublic(
        job_id=job.id, intent=job.intent, mode=job.mode, status=job.status, progress=job.progress,
        inputs=job.inputs, context=job.context, result=job.result, error=job.error,
        callback_url=job.callback_url, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, duration_ms=duration_ms(job),
        steps=[StepPublic.model_validate(step, from_attributes=True) for step in steps],
        usage=total_usage([step.output for step in steps]), pending=pending,
        links=links_for(job.id),
    )


USAGE_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "model_seconds",
              "calls")


def total_usage(outputs: list[Any]) -> dict[str, Any] | None:
    """The model usage of a job: each step output's `usage`, added up."""
    found = [o["usage"] for o in outputs if isinstance(o, dict) and isinstance(o.get("usage"),
                                                                               dict)]
    if not found:
        return None
    total: dict[str, Any] = {key: sum(u.get(key, 0) or 0 for u in found) for key in USAGE_SUMS}
    total["cost"] = round(total["cost"], 8)
    total["model_seconds"] = round(total["model_seconds"], 4)
    total["models"] = sorted({u["model"] for u in found if u.get("model")})
    return total


class ChatRequest(BaseModel):
    """Reference 000's `POST /chat`: a message in a session."""

    message: str = Field(min_length=1, max_length=20000, description="The user's message.")
    twin_id: str | None = Field(None, max_length=200, description="Kept on the session.")
    session_id: str | None = Field(None, max_length=128, description=(
        "The conversation; a new one is started (and returned) when absent."))
    namespace: str | None = Field(None, max_length=200, description="Scopes memory steps.")


class V1ChatRequest(BaseModel):
    """Reference 002's `POST /v1/chat`."""

    prompt: str = Field(min_length=1, max_length=20000, description="What the user asks.")
    user_id: str | None = Field(None, max_length=200, description="Kept on the session.")
    metadata: dict[str, Any] = Field(default_factory=dict, description=(
        "Kept as the job's context; `session_id` and `namespace` here are used as such."))


class ChatAnswer(BaseModel):
    """The chat contracts' answer (`status`: completed, failed, cancelled or accepted)."""

    response: str = Field(description="The answer; empty while `accepted`.")
    job_id: str
    actions_taken: list[str] = Field(default_factory=list)
    status: Literal["completed", "failed", "cancelled", "accepted"]
    session_id: str | None = None
    fallback: bool = Field(False, description="Whether the rule-based planner answered.")


class MessagePublic(BaseModel):
    """One message of a session."""

    id: int
    role: str = Field(description="user, assistant or tool")
    content: str
    data: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    created_at: datetime


class SessionPublic(BaseModel):
    """A chat session: its id, who and what memory it is about, when it was last used."""

    id: str
    twin_id: str | None = None
    user_id: str | None = None
    namespace: str | None = None
    created_at: datetime
    updated_at: datetime


class SessionMessages(BaseModel):
    """A session and its messages, oldest first."""

    session_id: str
    twin_id: str | None = None
    user_id: str | None = None
    namespace: str | None = None
    messages: list[MessagePublic]


class LlmModels(BaseModel):
    """What the configured server lists, and the model in use."""

    base_url: str
    model: str
    models: list[str]


class LlmConnection(BaseModel):
    """The outcome of one call to the configured server."""

    ok: bool
    base_url: str
    model: str
    latency_ms: int
    planner: dict[str, Any]
    error: str | None = None


class UsageReport(BaseModel):
    """A tenant's model use and jobs since the start of the UTC day or month, and its budget."""

    tenant_id: str
    period: Literal["day", "month"]
    since: datetime = Field(description="The start of the period (UTC).")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float = Field(description="USD, from LLM_PRICES, as each step recorded it.")
    calls: int = Field(description="Model calls.")
    jobs: dict[str, int] = Field(description="Jobs submitted in the period, by intent.")
    budget: dict[str, float] = Field(
        description="The tenant's budget for the period: `usd` and `tokens` (0: unlimited).")
