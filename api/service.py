"""Submitting a job: validate, plan, store, commit, enqueue, and optionally wait."""

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool
from kombu.exceptions import BatchPublishError, OperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError

from adapters import netguard
from api.schemas import UsageReport
from api.scopes import lacks
from api.state import AppState
from core import deliveries
from core.errors import (
    BudgetExhausted,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from core.events import count_new
from core.models import (
    KEY_ID,
    TERMINAL_EVENTS,
    ApiKey,
    Delivery,
    Effect,
    Job,
    JobStatus,
    JobStep,
    PoolName,
    Scope,
    Tenant,
    utcnow,
)
from core.store import queries
from core.store.keys import add_key, find_tenant
from core.store.keys import revoke_key as store_revoke_key
from core.store.limits import (
    Period,
    budget_refusal,
    default_budget,
    intent_counts,
    model_usage,
    tenant_budget,
)
from core.store.queries import WAITING_STEPS, cancel_job, get_job, job_steps
from core.store.retries import retry_job
from core.store.submission import discard_submission, submit_job
from core.store.tables import Handoff, NewStep, new_job_id, step_task_id
from core.store.waits import approve_step, reject_step, resume_step, submitting_key
from tasks.engine import heartbeat, slots
from tasks.engine.cancellation import UNREVOKE, clear, flag
from tasks.engine.chain import hand_off, send_step, send_steps
from tasks.engine.pools import POOLS
from tasks.engine.registry import Intent
from tasks.intents import REGISTRY

BROKER_ERRORS = (OperationalError, RedisError, OSError)
UNREVOKE_SECONDS = 1.0

log = logging.getLogger(__name__)
audit_log = logging.getLogger("orchestrator.audit")


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
    key_id: str | None = None
    internal: bool = False
    """The API chose the intent itself (a prompt's `llm.plan`), so one not offered may run."""

    def stored_context(self) -> dict[str, Any]:
        """The context as stored: the caller's, with the API key id the audit names."""
        return {**self.context, KEY_ID: self.key_id} if self.key_id else self.context


def default_idempotency_key(tenant_id: str, intent: str, inputs: dict[str, Any]) -> str:
    """SHA-256 of tenant, intent and the canonical JSON of the inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{tenant_id}\n{intent}\n{canonical}".encode()).hexdigest()


@dataclass
class Planned:
    """A submission resolved: its intent, valid inputs, effect and first steps."""

    intent: Intent
    inputs: dict[str, Any]
    effect: Effect
    steps: list[NewStep]


def plan(request: Request, *, exposed: list[str], max_steps: int = 0) -> Planned:
    """Resolve the intent (one of those `exposed`, unless internal), check the mode, validate
    the inputs and plan the steps."""
    intent = (REGISTRY.get(request.intent, request.tenant_id) if request.internal
              else REGISTRY.offer(request.intent, request.tenant_id, exposed))
    if request.mode not in ("auto", intent.mode):
        raise InvalidRequest(f"mode: intent '{intent.name}' runs in mode '{intent.mode}', "
                             f"not '{request.mode}'; send mode 'auto' or '{intent.mode}'",
                             field="mode")
    if intent.precheck is not None:
        intent.precheck()
    inputs = intent.validate(request.inputs)
    intent.authorize(inputs, request.tenant_id)
    steps = intent.plan(inputs)
    if max_steps and len(steps) > max_steps:
        raise InvalidRequest(f"inputs: the plan has {len(steps)} steps, more than the limit of "
                             f"{max_steps} (ORCHESTRATOR_MAX_STEPS)", field="inputs")
    return Planned(intent, inputs.model_dump(mode="json"), intent.effect_for(inputs), steps)


def idempotency_key(request: Request, planned: Planned) -> str | None:
    """The caller's key; else, for a write, the default key (reference 001); a read the
    caller did not key runs again each time."""
    if request.idempotency_key:
        return request.idempotency_key
    if planned.effect is Effect.read:
        return None
    return default_idempotency_key(request.tenant_id, planned.intent.name, planned.inputs)


def _store_and_enqueue(state: AppState, job_id: str, request: Request) -> tuple[Job, bool]:
    if request.callback_url:
        netguard.check_url_at_submit(request.callback_url, state.resources.allowed_networks)
    settings = state.settings.orchestrator
    planned = plan(request, exposed=settings.exposed_intents, max_steps=settings.max_steps)
    if planned.intent.pool == PoolName.llm:
        check_budget(state, request.tenant_id)
    key = idempotency_key(request, planned)
    try:
        job, created, handoff = _store(state, job_id, request, planned, key)
    except IntegrityError:
        # A concurrent twin claimed the key first (Postgres): now it names that job.
        job, created, handoff = _store(state, job_id, request, planned, key)
    if created:
        _enqueue_or_discard(state, job, handoff)
    return job, created


def check_budget(state: AppState, tenant_id: str) -> None:
    """Refuse a prompt (a job of the `llm` pool) when the tenant's model budget is spent."""
    with state.db.read() as session:
        refusal = budget_refusal(session=session, tenant_id=tenant_id,
                                 default=default_budget(state.settings.limits))
    if refusal is not None:
        raise BudgetExhausted(refusal)


def usage_report(state: AppState, caller: str, operator: bool, tenant_id: str,
                 period: Period) -> UsageReport:
    """A tenant's usage in the period: the caller's own, or any tenant's for an operator."""
    if tenant_id != caller and not operator:
        raise Forbidden("only an operator key may read another tenant's usage")
    with state.db.read() as session:
        if session.get(Tenant, tenant_id) is None:
            raise NotFound(f"tenant {tenant_id} not found")
        used = model_usage(session=session, tenant_id=tenant_id, period=period)
        jobs = intent_counts(session=session, tenant_id=tenant_id, period=period)
        budget = tenant_budget(session=session, tenant_id=tenant_id,
                               default=default_budget(state.settings.limits))
    usd, tokens = budget.limits(period)
    return UsageReport(tenant_id=tenant_id, period=period, since=used.since,
                       prompt_tokens=used.prompt_tokens, completion_tokens=used.completion_tokens,
                       total_tokens=used.tokens, cost=round(used.cost, 8), calls=used.calls,
                       jobs=jobs, budget={"usd": usd, "tokens": tokens})


def _store(state: AppState, job_id: str, request: Request, planned: Planned,
           key: str | None) -> tuple[Job, bool, Handoff]:
    with state.db.write() as session:
        return submit_job(
            session=session, job_id=job_id, tenant_id=request.tenant_id,
            intent=planned.intent.name, mode=planned.intent.mode, inputs=planned.inputs,
            context=request.stored_context(), callback_url=request.callback_url,
            steps=planned.steps, idempotency_key=key,
            window=state.settings.orchestrator.idempotency_window)


def _enqueue_or_discard(state: AppState, job: Job, handoff: Handoff) -> None:
    """Send the first step; if the broker refuses, the job is removed as if never submitted."""
    try:
        if handoff.send is not None:
            send_step(state.celery, handoff.send)
    except BROKER_ERRORS as exc:
        log.error("could not enqueue job %s: %s", job.id, type(exc).__name__)
        with state.db.write() as session:
            discard_submission(session=session, job_id=job.id)
        raise Unavailable("the broker could not be reached; the job was not started: retry "
                          "the request") from exc
    count_new(state.redis, handoff.events)


def after_commit(state: AppState, handoff: Handoff) -> None:
    """Hand off what a committed change left to do; the sweeper covers a broker outage."""
    try:
        hand_off(state.celery, state.redis, handoff)
    except BROKER_ERRORS as exc:
        log.warning("hand-off after commit failed (%s); the sweeper will send it",
                    type(exc).__name__)


@dataclass
class BatchItem:
    """A job of a batch, planned, with its idempotency key."""

    request: Request
    planned: Planned
    key: str | None


def submit_batch(state: AppState, requests: list[Request]) -> list[tuple[Job, bool]]:
    """Store jobs in one transaction, each with its own idempotency and result entry, then
    send their first steps through one broker connection; (job, created) in request order.

    An item that cannot be planned refuses the whole batch, naming it (`jobs.N`)."""
    items = [_plan_item(state, n, request) for n, request in enumerate(requests)]
    try:
        stored = _store_batch(state, items)
    except IntegrityError:
        # A concurrent twin claimed a key first (Postgres): now it names that job.
        stored = _store_batch(state, items)
    _enqueue_batch(state, [(job, handoff) for job, created, handoff in stored if created])
    return [(job, created) for job, created, _ in stored]


def _plan_item(state: AppState, n: int, request: Request) -> BatchItem:
    settings = state.settings.orchestrator
    try:
        if request.callback_url:
            netguard.check_url_at_submit(request.callback_url, state.resources.allowed_networks)
        planned = plan(request, exposed=settings.exposed_intents, max_steps=settings.max_steps)
    except (InvalidRequest, NotFound) as exc:
        field = getattr(exc, "field", None) or ("intent" if isinstance(exc, NotFound) else None)
        message = str(exc)
        prefix = f"jobs.{n}." if field and message.startswith(field) else f"jobs.{n}: "
        raise InvalidRequest(prefix + message, field=f"jobs.{n}.{field}" if field
                             else f"jobs.{n}") from exc
    except Forbidden as exc:
        raise Forbidden(f"jobs.{n}: {exc}") from exc
    return BatchItem(request, planned, idempotency_key(request, planned))


def _store_batch(state: AppState, items: list[BatchItem]) -> list[tuple[Job, bool, Handoff]]:
    with state.db.write() as session:
        return [submit_job(
            session=session, job_id=new_job_id(), tenant_id=item.request.tenant_id,
            intent=item.planned.intent.name, mode=item.planned.intent.mode,
            inputs=item.planned.inputs, context=item.request.stored_context(),
            callback_url=item.request.callback_url, steps=item.planned.steps,
            idempotency_key=item.key, window=state.settings.orchestrator.idempotency_window)
            for item in items]


def _enqueue_batch(state: AppState, created: list[tuple[Job, Handoff]]) -> None:
    """Send the new jobs' first steps in one round trip; if the broker does not take them,
    those jobs are removed as if never submitted, and the caller is told so."""
    sends = [(job, handoff.send) for job, handoff in created if handoff.send is not None]
    try:
        send_steps(state.celery, [step for _, step in sends])
    except (*BROKER_ERRORS, BatchPublishError) as exc:
        unsent = {job.id for job, _ in sends}
        log.error("could not enqueue %d jobs of a batch: %s", len(unsent),
                  type(exc.__cause__ or exc).__name__)
        with state.db.write() as session:
            for job_id in unsent:
                discard_submission(session=session, job_id=job_id)
        _count_created(state, [(job, h) for job, h in created if job.id not in unsent])
        raise Unavailable(
            f"the broker could not be reached: {len(unsent)} new jobs of the batch were not "
            f"started, {len(created) - len(unsent)} were; retry the request (each job's "
            "idempotency key answers the ones that started)") from exc
    _count_created(state, created)


def _count_created(state: AppState, created: list[tuple[Job, Handoff]]) -> None:
    count_new(state.redis, [event for _, handoff in created for event in handoff.events])


def approve(state: AppState, tenant_id: str, job_id: str, token: str, key_id: str) -> None:
    """Approve a job's held step with its token, as the API key `key_id`; it is sent to run.

    Every approval (API, MCP, console) comes here: ORCHESTRATOR_APPROVAL_POLICY `other-key`
    refuses the key that submitted the job; the event and the audit line name the key's id."""
    with state.db.write() as session:
        if state.settings.orchestrator.approval_policy == "other-key" and \
                submitting_key(session=session, job_id=job_id) == key_id:
            raise Forbidden(f"the key that submitted job {job_id} may not approve its own held "
                            "step (ORCHESTRATOR_APPROVAL_POLICY=other-key): approve it with "
                            "another key of the tenant")
        handoff, refused = approve_step(session=session, tenant_id=tenant_id,
                                        job_id=job_id, token=token, approver=key_id)
    after_commit(state, handoff)
    if refused:
        raise Conflict(refused)
    audit_log.info("held step of job %s approved by key %s (tenant %s)", job_id, key_id,
                   tenant_id)


def reject(state: AppState, tenant_id: str, job_id: str, reason: str, key_id: str) -> None:
    """Reject a job's held step as the API key `key_id`: it fails with the reason, and the
    job with it."""
    with state.db.write() as session:
        handoff = reject_step(session=session, tenant_id=tenant_id, job_id=job_id,
                              reason=reason, rejecter=key_id)
    after_commit(state, handoff)
    audit_log.info("held step of job %s rejected by key %s (tenant %s)", job_id, key_id,
                   tenant_id)


def resume(state: AppState, token: str, output: dict[str, Any]) -> tuple[str, int]:
    """Resume the step waiting on `token` with `output`; returns its job id and index."""
    with state.db.write() as session:
        resumed = resume_step(session=session, token=token, output=output)
    after_commit(state, resumed.handoff)
    if resumed.refused:
        raise Conflict(resumed.refused)
    return resumed.job_id, resumed.index


def cancel(state: AppState, tenant_id: str, job_id: str) -> tuple[Job, list[JobStep]]:
    """Cancel a job that has not ended: its steps are revoked, a running one is told to stop."""
    with state.db.write() as session:
        job, events = cancel_job(session=session, tenant_id=tenant_id, job_id=job_id)
        steps = job_steps(session=session, job_id=job_id)
    try:
        flag(state.redis, job_id)
        slots.forget(state.redis, job_id)
        hand_off(state.celery, state.redis, Handoff(events))
        state.celery.control.revoke([step_task_id(job_id, s.index) for s in steps])
    except BROKER_ERRORS as exc:
        # The store already says cancelled, and workers skip steps of cancelled jobs; a lost
        # revoke only costs a dispatch.
        log.warning("job %s cancelled, but the broker missed the revoke: %s", job_id,
                    type(exc).__name__)
    return job, steps


def retry(state: AppState, tenant_id: str, job_id: str) -> None:
    """Run a failed or cancelled job again from its first step that did not succeed."""
    with state.db.write() as session:
        was = get_job(session=session, tenant_id=tenant_id, job_id=job_id).status
        handoff = retry_job(session=session, tenant_id=tenant_id, job_id=job_id)
        indexes = [s.index for s in job_steps(session=session, job_id=job_id)]
    try:
        clear(state.redis, job_id)
        if was == JobStatus.cancelled:
            _unrevoke(state, [step_task_id(job_id, index) for index in indexes])
    except BROKER_ERRORS as exc:
        log.warning("job %s retried, but the broker missed the unrevoke: %s", job_id,
                    type(exc).__name__)
    after_commit(state, handoff)


def _unrevoke(state: AppState, task_ids: list[str]) -> None:
    """Have the live workers forget the cancel's revokes of these steps, waiting briefly for
    their answers; a worker that drops a step anyway leaves the job quiet, and the sweeper sends
    it again."""
    ttl = state.settings.worker.heartbeat_seconds * 3
    live = {name for pool in POOLS for name in heartbeat.live_workers(state.redis, pool, ttl)}
    if live:
        state.celery.control.broadcast(UNREVOKE, arguments={"task_ids": task_ids}, reply=True,
                                       timeout=UNREVOKE_SECONDS, limit=len(live))


def redeliver(state: AppState, tenant_id: str, delivery_id: str) -> Delivery:
    """Mark a finished delivery due again (same `webhook-id`), then send it."""
    with state.db.write() as session:
        delivery = deliveries.redeliver(session=session, tenant_id=tenant_id,
                                        delivery_id=delivery_id)
    after_commit(state, Handoff(deliveries_due=True))
    return delivery


def check_job(state: AppState, tenant_id: str, job_id: str) -> None:
    """Raise NotFound unless the tenant has this job."""
    with state.db.read() as session:
        get_job(session=session, tenant_id=tenant_id, job_id=job_id)


def load_job(state: AppState, tenant_id: str, job_id: str) -> tuple[Job, list[JobStep]]:
    with state.db.read() as session:
        job = get_job(session=session, tenant_id=tenant_id, job_id=job_id)
        return job, job_steps(session=session, job_id=job_id)


def pending_action(state: AppState, steps: list[JobStep]) -> dict[str, Any] | None:
    """What the job's held or waiting step waits for (token or resume URL, reason, deadline)."""
    if not any(s.status in WAITING_STEPS for s in steps):
        return None
    with state.db.read() as session:
        return queries.pending_action(session=session, steps=steps, vault=state.vault)


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
    job_id = new_job_id()
    with state.hub.subscribe(job_id) as queue:
        job, created = await run_in_threadpool(_store_and_enqueue, state, job_id, request)
        if wait <= 0:
            return job, [], created
        if created and not job.status.terminal:  # an empty plan ends at once
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


def managed_tenant(state: AppState, own: str, operator: bool, asked: str | None) -> str:
    """The tenant whose keys a call manages: the caller's, or (an operator's) the one asked."""
    if asked is None or asked == own:
        return own
    if not operator:
        raise Forbidden(f"{lacks(Scope.operator)}: only operator keys manage other tenants' "
                        "keys")
    with state.db.read() as session:
        return find_tenant(session=session, tenant=asked).id


def create_key(state: AppState, tenant_id: str, scopes: set[Scope], held: frozenset[Scope],
               name: str, expires_at: datetime | None) -> tuple[ApiKey, str]:
    """A new key of the tenant; it may hold only scopes the creating key holds."""
    if missing := sorted(scopes - held):
        raise Forbidden(f"{lacks(missing[0])}, so it cannot give it to a new key")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("expires_at is in the past; give a later time", "expires_at")
    with state.db.write() as session:
        key, raw = add_key(session=session, tenant_id=tenant_id, scopes=scopes, name=name,
                           expires_at=expires_at)
    audit_log.info("API key %s created for tenant %s with scopes %s", key.id, tenant_id,
                   key.scopes)
    return key, raw


def revoke_key(state: AppState, key_id: str, tenant_id: str | None) -> None:
    """Revoke a key (of `tenant_id`, unless None: an operator's call)."""
    with state.db.write() as session:
        key = store_revoke_key(session=session, key_id=key_id, tenant_id=tenant_id)
    audit_log.info("API key %s of tenant %s revoked", key.id, key.tenant_id)
