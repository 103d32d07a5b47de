"""Workflow engines: n8n and ActivePieces webhooks, called through a breaker per engine.

A flow is a named workflow behind a webhook. A call POSTs the step to it, signed the Standard
Webhooks way (the tenant's secret, as callbacks), and reads its answer: a body within the
flow's timeout is the result; a 202 (or any 2xx of an asynchronous ActivePieces webhook) means
the workflow took the work and will POST its result to the step's resume URL.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core import jsonschemas
from core.errors import InvalidRequest, OrchestratorError, UpstreamError
from core.settings import FlowSettings, RetrySettings

Engine = Literal["n8n", "activepieces"]
BASE_SETTING = {"n8n": "N8N_WEBHOOK_BASE", "activepieces": "ACTIVEPIECES_BASE"}
MAX_ANSWER_BYTES = 1024 * 1024


class FlowSpec(BaseModel):
    """A named flow: the engine that runs it, its webhook, its limits and who may use it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$", max_length=200,
                      description="The intent name, e.g. gmail.triage.")
    engine: Engine
    path: str = Field(min_length=1, max_length=500,
                      description="n8n: the webhook path; ActivePieces: the flow id.")
    mode: Literal["sync", "async"] = Field(
        "sync", description="ActivePieces: `sync` calls `/sync` and takes its answer; `async` "
        "waits for the resume URL. n8n decides by its answer (202 waits).")
    timeout: float | None = Field(None, gt=0, description="Seconds to answer the webhook.")
    wait: float | None = Field(None, gt=0, description="Seconds to wait for a resume.")
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    tenants: list[str] | None = Field(None, description="Tenant ids allowed; null: all.")
    description: str = ""

    @field_validator("input_schema")
    @classmethod
    def _usable(cls, schema: dict[str, Any]) -> dict[str, Any]:
        """Only references inside the schema, patterns RE2 can run (as tenants' tools)."""
        try:
            jsonschemas.check(schema)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from exc
        return schema


EXAMPLES = [
    FlowSpec(name="gmail.triage", engine="n8n", path="gmail-triage",
             description="Triage the inbox: label, summarise and draft replies (n8n).",
             input_schema={"type": "object", "properties": {
                 "max_emails": {"type": "integer", "minimum": 1, "maximum": 500},
                 "label": {"type": "string", "maxLength": 200}},
                 "additionalProperties": False}),
    FlowSpec(name="slack.summarize", engine="n8n", path="slack-summarize",
             description="Summarise a Slack channel since a time (n8n).",
             input_schema={"type": "object", "properties": {
                 "channel": {"type": "string", "maxLength": 200},
                 "since": {"type": "string", "maxLength": 64}},
                 "required": ["channel"], "additionalProperties": False}),
    FlowSpec(name="calendar.schedule", engine="n8n", path="calendar-schedule",
             description="Schedule a meeting with attendees (n8n).",
             input_schema={"type": "object", "properties": {
                 "title": {"type": "string", "maxLength": 500},
                 "start": {"type": "string", "maxLength": 64},
                 "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
                 "attendees": {"type": "array", "items": {"type": "string"}}},
                 "required": ["title", "start"], "additionalProperties": False}),
]


def load_flows(settings: FlowSettings) -> list[FlowSpec]:
    """The built-in examples and the flows of `FLOWS_FILE` (which win on a shared name)."""
    flows = {spec.name: spec for spec in EXAMPLES}
    if settings.flows_file:
        listed = TypeAdapter(list[FlowSpec]).validate_json(Path(settings.flows_file).read_bytes())
        flows |= {spec.name: spec for spec in listed}
    return list(flows.values())


def webhook_url(spec: FlowSpec, settings: FlowSettings) -> str:
    """Where the flow's webhook is; InvalidRequest when its engine is not configured."""
    base = settings.n8n_webhook_base if spec.engine == "n8n" else settings.activepieces_base
    if not base:
        raise InvalidRequest(f"flow engine {spec.engine} is not configured: set "
                             f"{BASE_SETTING[spec.engine]}", field="intent")
    url = f"{base.rstrip('/')}/{spec.path.strip('/')}"
    return f"{url}/sync" if spec.engine == "activepieces" and spec.mode == "sync" else url


class FlowTimeout(OrchestratorError):
    """Raised when a flow does not answer its webhook in time (not retried: it may be running)."""

    status_code = 504


@dataclass(frozen=True)
class FlowAnswer:
    """A flow's answer: its status and body (JSON when it sent JSON)."""

    status: int
    body: Any


def _body(response: httpx.Response) -> Any:
    content = response.content[:MAX_ANSWER_BYTES]
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


def _answer(upstream: str, response: httpx.Response) -> FlowAnswer:
    status = response.status_code
    if 200 <= status < 300:
        return FlowAnswer(status, _body(response))
    detail = f"answered {status}" + (", a redirect; not followed" if status < 400 else "")
    retry_after = response.headers.get("retry-after")
    raise UpstreamError(upstream, detail, status=status,
                        retry_after=float(retry_after) if retry_after and
                        retry_after.isdigit() else None)


class FlowClient(Upstream):
    """Calls flows' webhooks; one per worker process, closed with it."""

    def __init__(self, settings: FlowSettings, retry: RetrySettings, breakers: Breakers) -> None:
        super().__init__(breakers, retry)
        self.settings = settings
        self.http = httpx.Client(follow_redirects=False, trust_env=False)

    def call(self, spec: FlowSpec, body: bytes, headers: dict[str, str],
             timeout: float) -> FlowAnswer:
        """POST `body` to the flow's webhook through its engine's breaker and retry policy."""
        url, upstream = webhook_url(spec, self.settings), f"flow:{spec.engine}"

        def send() -> FlowAnswer:
            try:
                response = self.http.post(url, content=body, headers=headers, timeout=timeout)
            except httpx.TimeoutException as exc:
                raise FlowTimeout(f"{spec.engine} flow {spec.name} did not answer within "
                                  f"{timeout:g}s") from exc
            except httpx.TransportError as exc:
                raise UpstreamError(upstream, f"could not reach the {spec.engine} webhook "
                                    f"({type(exc).__name__})") from exc
            return _answer(upstream, response)

        return self.guarded(upstream, send)

    def close(self) -> None:
        self.http.close()
