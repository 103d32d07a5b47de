"""Flows as intents: a provider of the configured flows and the step that calls one.

The step POSTs `{intent, inputs, job_id, step, resume_url}` to the flow's webhook, signed with
the tenant's webhook secret (Standard Webhooks, as callbacks), so the workflow can verify it.
"""

import json
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from adapters import callbacks
from adapters.flow import FlowSpec, load_flows, webhook_url
from core import deliveries
from core.models import PoolName
from core.settings import FlowSettings
from tasks.engine.context import StepContext, Wait
from tasks.engine.registry import Intent, JsonInputs, ResourceProvider


def run_flow(spec: FlowSpec, step: StepContext) -> Any:
    """Call the flow: its answer is the output, or the step waits for its resume URL."""
    rt = step.resources
    payload = {"intent": spec.name, "inputs": step.inputs.model_dump(mode="json"),
               "job_id": step.job_id, "step": step.index, "resume_url": step.resume_url()}
    body = json.dumps(payload, separators=(",", ":")).encode()
    with rt.db.read() as session:
        secrets = deliveries.signing_secrets(session=session, tenant_id=step.tenant_id,
                                             vault=rt.vault)
    headers = callbacks.webhook_headers(secrets, f"{step.job_id}-{step.index}",
                                        int(time.time()), body)
    timeout = min(spec.timeout or rt.settings.flow.timeout, max(step.remaining(), 1.0))
    answer = rt.flows.call(spec, body, headers, timeout)
    if answer.status == 202 or (spec.engine == "activepieces" and spec.mode == "async"):
        return Wait(f"{spec.engine} flow {spec.name} took the work; it will call the resume URL",
                    spec.wait)
    return answer.body if isinstance(answer.body, dict) else {"response": answer.body}


def flow_intent(spec: FlowSpec, settings: FlowSettings) -> Intent:
    """The intent of one flow: mode `flow`, on the `flow` pool, inputs by its JSON schema; a
    submission is refused while its engine is not configured."""
    return Intent(spec.name, PoolName.flow, "flow", JsonInputs, spec.description or
                  f"The {spec.engine} flow at {spec.path}.", partial(run_flow, spec),
                  timeout=spec.timeout, json_schema=spec.input_schema,
                  precheck=partial(_configured, spec, settings))


def _configured(spec: FlowSpec, settings: FlowSettings) -> None:
    webhook_url(spec, settings)


class FlowProvider(ResourceProvider):
    """The configured flows (built-in examples and `FLOWS_FILE`), each for its tenants."""

    prefix = ""

    def __init__(self, load: Callable[[], list[FlowSpec]] | None = None) -> None:
        self._load = load or (lambda: load_flows(self.resources.settings.flow))
        self._flows: list[tuple[FlowSpec, Intent]] | None = None
        self._lock = threading.Lock()

    def intents(self, tenant_id: str | None) -> Iterable[Intent]:
        return [intent for spec, intent in self._loaded()
                if spec.tenants is None or (tenant_id is not None and tenant_id in spec.tenants)]

    def _loaded(self) -> list[tuple[FlowSpec, Intent]]:
        with self._lock:
            if self._flows is None:
                settings = self.resources.settings.flow
                self._flows = [(spec, flow_intent(spec, settings)) for spec in self._load()]
            return self._flows
