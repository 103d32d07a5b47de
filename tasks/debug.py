"""Debug intents: inputs and handlers that exercise the engine without external systems."""

import json
import os
import signal
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters import callbacks
from core.errors import UpstreamUnavailable
from core.models import PoolName
from core.store.tables import NewStep
from tasks.engine.context import Cancelled, Extend, Hold, StepContext, TimeLimitExceeded, Wait

TICK = 0.1
RUNS_KEY = "orch:debug:runs:{job_id}:{index}"
RUNS_TTL = 3600


class EchoInputs(BaseModel):
    """Any JSON object; `debug.echo` returns it."""

    model_config = ConfigDict(extra="allow")


class SleepInputs(BaseModel):
    """How long `debug.sleep` sleeps."""

    seconds: float = Field(1.0, ge=0, le=3600, description="Seconds to sleep.")


class ChainInputs(BaseModel):
    """The shape of a `debug.chain`."""

    steps: int = Field(3, ge=1, le=100, description="Number of steps in the chain.")
    delay: float = Field(0.0, ge=0, le=60, description="Seconds each step waits.")
    count: bool = Field(False, description=f"Count each step's runs in Redis ({RUNS_KEY}), "
                        "to check that no finished step runs again.")
    fail_step: int = Field(0, ge=0, le=100, description="The link (from 1) that fails its "
                           "first run, to rehearse a retry from the failed step; 0: none.")


class LinkInputs(BaseModel):
    """One link of a `debug.chain`."""

    step: int = Field(ge=1, description="This link's place, from 1.")
    of: int = Field(ge=1, description="The chain's length.")
    delay: float = Field(0.0, ge=0, le=60, description="Seconds to wait.")
    count: bool = Field(False, description=f"Count each run in Redis ({RUNS_KEY}).")
    fail_runs: int = Field(0, ge=0, le=100, description="Fail this many first runs (counted).")


class FailInputs(BaseModel):
    """What `debug.fail` fails with."""

    message: str = Field("failed on purpose", max_length=1000, description="The error text.")
    unavailable_upstream: str | None = Field(
        None, max_length=200, description="Fail as if this upstream's circuit breaker were "
        "open (retried by Celery after `retry_after`), to rehearse an outage.")
    retry_after: float = Field(1.0, ge=0, le=3600, description="With `unavailable_upstream`.")


class PlannedStep(BaseModel):
    """A step a plan adds: an intent and its inputs (which may hold step references)."""

    intent: str = Field(min_length=1, max_length=200, description="A registered intent.")
    inputs: dict[str, Any] = Field(default_factory=dict, description=(
        'The intent\'s inputs; `{"$ref": "steps.N.output.key"}` takes an earlier output.'))


class PlanInputs(BaseModel):
    """The steps `debug.plan` adds to its own job when it runs, as a planner would."""

    steps: list[PlannedStep] = Field(default_factory=list, max_length=1000,
                                     description="Steps to append after the planning step.")


class HoldInputs(BaseModel):
    """A step that must be approved before it runs."""

    reason: str = Field("debug.hold always asks", max_length=1000,
                        description="Why it is held (shown to the approver).")
    payload: dict[str, Any] = Field(default_factory=dict, description="Returned once approved.")
    expires_in: float | None = Field(None, gt=0, le=86400, description=(
        "Seconds the approval may wait (at most ORCHESTRATOR_APPROVAL_TTL)."))


class WaitInputs(BaseModel):
    """A step that waits for an outside system to call its resume URL."""

    reason: str = Field("debug.wait waits for its resume URL", max_length=1000)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, description=(
        "Seconds to wait for the resume (at most ORCHESTRATOR_WAIT_TIMEOUT)."))


class HttpInputs(BaseModel):
    """A POST of `body` to `url`, through the same SSRF guard as callbacks."""

    url: str = Field(max_length=2048, description="http(s) URL; private addresses are refused "
                     "unless in CALLBACK_ALLOWED_NETWORKS.")
    body: dict[str, Any] = Field(default_factory=dict, description="JSON body to send.")


def echo(step: StepContext) -> dict[str, Any]:
    """Return the inputs unchanged."""
    return step.inputs.model_dump(mode="json")


def _pause(step: StepContext, seconds: float) -> float:
    """Wait `seconds`, stopping at a cancel or the time limit; returns the time waited."""
    started = time.monotonic()
    deadline = started + seconds
    while (now := time.monotonic()) < deadline:
        if step.cancelled():
            raise Cancelled()
        if now >= step.deadline:
            raise TimeLimitExceeded(f"ran past its time limit after {now - started:.1f}s")
        time.sleep(min(TICK, deadline - now))
    return round(time.monotonic() - started, 3)


def sleep(step: StepContext) -> dict[str, Any]:
    """Sleep `seconds`; a cancel stops it."""
    assert isinstance(step.inputs, SleepInputs)
    return {"slept": _pause(step, step.inputs.seconds)}


def chain_link(step: StepContext) -> dict[str, Any]:
    """One link of `debug.chain`: wait `delay`, then report its place."""
    assert isinstance(step.inputs, LinkInputs)
    if step.inputs.count or step.inputs.fail_runs:
        key = RUNS_KEY.format(job_id=step.job_id, index=step.index)
        pipe = step.resources.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, RUNS_TTL)
        runs = int(pipe.execute()[0])
        if runs <= step.inputs.fail_runs:
            raise DebugFailure(f"link {step.inputs.step} fails its first "
                               f"{step.inputs.fail_runs} run(s); this was run {runs}")
    if step.inputs.delay:
        _pause(step, step.inputs.delay)
    return {"step": step.inputs.step, "of": step.inputs.of}


def planned_only(step: StepContext) -> None:
    """`debug.chain` runs as its links; its own step never runs (planners may not plan it)."""
    raise DebugFailure("debug.chain runs as its links, never as a step of its own")


def plan_chain(inputs: ChainInputs) -> list[NewStep]:
    return [NewStep("debug.chain.link", PoolName.tools,
                    {"step": i + 1, "of": inputs.steps, "delay": inputs.delay,
                     "count": inputs.count, "fail_runs": int(inputs.fail_step == i + 1)})
            for i in range(inputs.steps)]


class DebugFailure(Exception):
    """Raised by `debug.fail`, on purpose."""


def fail(step: StepContext) -> None:
    """Raise `DebugFailure(message)`, or an open breaker's error for `unavailable_upstream`."""
    assert isinstance(step.inputs, FailInputs)
    if step.inputs.unavailable_upstream:
        raise UpstreamUnavailable(step.inputs.unavailable_upstream, step.inputs.retry_after)
    raise DebugFailure(step.inputs.message)


class CrashInputs(BaseModel):
    """Nothing: `debug.crash` kills the process running it."""


def crash(step: StepContext) -> None:
    """SIGKILL the worker process running this step (only if ORCHESTRATOR_DEBUG_CRASH is on).

    A step that keeps killing its worker is what the poison limit is for; this rehearses it.
    """
    if not step.resources.settings.orchestrator.debug_crash:
        raise DebugFailure("debug.crash is off: set ORCHESTRATOR_DEBUG_CRASH=true to allow it")
    os.kill(os.getpid(), signal.SIGKILL)


def plan(step: StepContext) -> Extend:
    """Add the planned steps (each checked against the registry) to this job."""
    assert isinstance(step.inputs, PlanInputs)
    steps = [step.plan_step(s.intent, s.inputs) for s in step.inputs.steps]
    return Extend({"planned": [s.intent for s in steps]}, steps)


def hold_reason(inputs: HoldInputs) -> Hold:
    return Hold(inputs.reason, inputs.expires_in)


def approved(step: StepContext) -> dict[str, Any]:
    """Runs once approved: returns the payload."""
    assert isinstance(step.inputs, HoldInputs)
    return {"approved": True, "payload": step.inputs.payload}


def wait(step: StepContext) -> Wait:
    """Hand out the resume URL (in the `step_waiting` event) and wait for it to be called."""
    assert isinstance(step.inputs, WaitInputs)
    step.resume_url()
    return Wait(step.inputs.reason, step.inputs.timeout)


def http(step: StepContext) -> dict[str, Any]:
    """POST the body to the URL once and report the answer."""
    assert isinstance(step.inputs, HttpInputs)
    settings = step.resources.settings.callback
    attempt = callbacks.deliver(
        step.inputs.url, json.dumps(step.inputs.body).encode(),
        {"content-type": "application/json"}, timeout=max(min(step.remaining(), 60.0), 0.1),
        max_response_bytes=settings.max_response_bytes,
        allowed=step.resources.allowed_networks)
    if attempt.status_code is None:
        raise DebugFailure(attempt.error or "no answer")
    return {"status": attempt.status_code, "latency_ms": attempt.latency_ms,
            "body": attempt.response_body}
