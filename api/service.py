"""Submitting a job: validate, plan, store, commit, enqueue, and optionally wait."""

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError

from adapters import callbacks
from api.metrics import JOBS_SUBMITTED
from api.state import AppState
from core import store
from core.errors import InvalidRequest, Unavailable
from core.events import TERMINAL_EVENTS, publish
from core.models import Job, JobStep
from core.store import NewStep
from tasks.chain import enqueue, send_deliveries
from tasks.registry import REGISTRY, Intent

log = logging.getLogger(__name__)


@dataclass
class Request:
    """A validated submission."""

    tenant_id: str
    intent: str
    inputs: dict[str, Any]
    mode: str
    context: dict[str, Any]
    callback_url: str | None
    idempotency_key: str | None


def default_idempotency_key(tenant_id: str, intent: str, inputs: dict[str, Any]) -> str:
    """SHA-256 of tenant, intent and the canonical JSON of the inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{tenant_id}\n{intent}\n{canonical}".encode()).hexdigest()


def _field_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    field = ".".join(["inputs", *(str(part) for part in first["loc"])])
    return InvalidRequest(f"{field}: {first['msg']}", field=field)


def plan(request: Request) -> tuple[Intent, dict[str, Any], list[NewStep]]:
    """Resolve the intent, check the mode, validate the inputs and plan the steps."""
    intent = REGISTRY.get(request.intent)
    if request.mode not in ("auto", intent.mode):
        raise InvalidRequest(f"mode: intent '{intent.name}' runs in mode '{intent.mode}', "
                             f"not '{request.mode}'; send mode 'auto' or '{intent.mode}'",
                             field="mode")
    try:
        inputs = intent.inputs.model_validate(request.inputs)
    except ValidationError as exc:
        raise _field_error(exc) from exc
    return intent, inputs.model_dump(mode="json"), intent.plan(inputs)


def _store_and_enqueue(state: AppState, job_id: str, request: Request) -> tuple[Job, bool]:
    if request.callback_url:
        allowed = callbacks.parse_networks(state.settings.callback.allowed_networks)
        callbacks.check_url_at_submit(request.callback_url, allowed)
    intent, inputs, steps = plan(request)
    key = request.idempotency_key or default_idempotency_key(request.tenant_id, intent.name,
                                                             inputs)
    try:
        job, created = _store(state, job_id, request, intent, inputs, steps, key)
    except IntegrityError:
        # A concurrent twin claimed the key first (Postgres): now it names that job.
        job, created = _store(state, job_id, request, intent, inputs, steps, key)
    if created:
        _enqueue_or_fail(state, job, steps)
    return job, created


def _store(state: AppState, job_id: str, request: Request, intent: Intent,
           inputs: dict[str, Any], steps: list[NewStep], key: str) -> tuple[Job, bool]:
    with state.db.write() as session:
        return store.submit_job(
            session=session, job_id=job_id, tenant_id=request.tenant_id, intent=intent.name,
            mode=intent.mode, inputs=inputs, context=request.context,
            callback_url=request.callback_url, steps=steps, idempotency_key=key,
            window=state.settings.orchestrator.idempotency_window)


def _enqueue_or_fail(state: AppState, job: Job, steps: list[NewStep]) -> None:
    try:
        enqueue(state.celery, job.id, steps)
    except (OperationalError, RedisError, OSError) as exc:
        log.error("could not enqueue job %s: %s", job.id, exc)
        error = "the broker could not be reached; the job was not started"
        with state.db.write() as session:
            events = store.abort_submission(session=session, job_id=job.id, error=error)
        publish(state.redis, events)
        send_deliveries(state.celery, events)
        raise Unavailable(f"{error}: retry the request") from exc


def check_job(state: AppState, tenant_id: str, job_id: str) -> None:
    """Raise NotFound unless the tenant has this job."""
    with state.db.read() as session:
        store.get_job(session=session, tenant_id=tenant_id, job_id=job_id)


def load_job(state: AppState, tenant_id: str, job_id: str) -> tuple[Job, list[JobStep]]:
    with state.db.read() as session:
        job = store.get_job(session=session, tenant_id=tenant_id, job_id=job_id)
        return job, store.job_steps(session=session, job_id=job_id)


async def _await_terminal(
    state: AppState, job: Job, queue: "asyncio.Queue[dict[str, Any]]", seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=min(remaining, 1.0))
            if event["type"] in TERMINAL_EVENTS:
                return
        except TimeoutError:
            fresh, _ = await run_in_threadpool(load_job, state, job.tenant_id, job.id)
            if fresh.status.terminal:
                return


async def submit(
    state: AppState, request: Request, wait: float
) -> tuple[Job, list[JobStep], bool]:
    """Store and enqueue a job; with `wait` > 0, wait up to that long for it to end."""
    job_id = store.new_job_id()
    with state.hub.subscribe(job_id) as queue:
        job, created = await run_in_threadpool(_store_and_enqueue, state, job_id, request)
        if created:
            JOBS_SUBMITTED.labels(intent=job.intent).inc()
        if wait <= 0:
            return job, [], created
        if created:
            await _await_terminal(state, job, queue, wait)
    if not created:
        with state.hub.subscribe(job.id) as queue:
            job, _ = await run_in_threadpool(load_job, state, request.tenant_id, job.id)
            if not job.status.terminal:
                await _await_terminal(state, job, queue, wait)
    job, steps = await run_in_threadpool(load_job, state, request.tenant_id, job.id)
    return job, steps, created


def clamp_wait(wait: float | bool, limit: float) -> float:
    """Seconds to wait: `true` means the server's limit; never more than it."""
    if wait is True:
        return limit
    return max(0.0, min(float(wait), limit))
