"""`/v1/jobs`: submit, read, list, follow and cancel jobs."""

import base64
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse

from api import service, streaming
from api.deps import StateDep, TenantDep
from api.schemas import (
    ApprovalRequest,
    ErrorBody,
    EventPublic,
    JobAccepted,
    JobCreate,
    JobPage,
    JobPublic,
    RejectionRequest,
    job_public,
    links_for,
)
from core import store
from core.errors import InvalidRequest
from core.events import publish
from core.models import JobStatus
from tasks.chain import send_deliveries
from workers.cancellation import flag

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 404, 409, 413, 422, 503)
}


@router.post("", operation_id="createJob", status_code=202, responses={
    **ERRORS, 200: {"model": JobPublic, "description": "The job ended within `wait`."}},
    response_model=JobAccepted | JobPublic)
async def create_job(
    body: JobCreate,
    state: StateDep,
    tenant: TenantDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JobAccepted | JobPublic:
    """Submit an intent or a prompt; 202 at once, or 200 with the result if it ends in `wait`.

    A `prompt` is planned by the `llm` pool into steps that then run, ending in an answer.
    """
    intent, inputs = body.target()
    request = service.Request(
        tenant_id=tenant, intent=intent, inputs=inputs, mode=body.mode,
        context=body.context, callback_url=str(body.callback_url) if body.callback_url else None,
        idempotency_key=idempotency_key)
    wait = service.clamp_wait(body.wait, state.settings.orchestrator.sync_timeout)
    job, steps, _ = await service.submit(state, request, wait)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if job.status.terminal and wait > 0:
        response.status_code = 200
        return job_public(job, steps)
    return JobAccepted(job_id=job.id, status=job.status, intent=job.intent, mode=job.mode,
                       links=links_for(job.id))


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    if not text:
        return None
    try:
        created, job_id = base64.urlsafe_b64decode(text.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except ValueError as exc:
        raise InvalidRequest("cursor: not a cursor from a previous page", "cursor") from exc


@router.get("", operation_id="listJobs", response_model=JobPage, responses=ERRORS)
def list_jobs(
    state: StateDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    intent: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobPage:
    """The caller's jobs, newest first, filtered by status and intent."""
    with state.db.read() as session:
        jobs = store.list_jobs(session=session, tenant_id=tenant, status=status, intent=intent,
                               limit=limit, before=_cursor(cursor))
    next_cursor = None
    if len(jobs) == limit:
        last = jobs[-1]
        next_cursor = base64.urlsafe_b64encode(
            f"{last.created_at.isoformat()}|{last.id}".encode()).decode()
    return JobPage(items=[job_public(job, []) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", operation_id="getJob", response_model=JobPublic, responses=ERRORS)
def get_job(job_id: str, state: StateDep, tenant: TenantDep) -> JobPublic:
    """A job with its steps, result, error and timings, and what a held or waiting step awaits."""
    job, steps = service.load_job(state, tenant, job_id)
    return job_public(job, steps, service.pending_action(state, steps))


@router.get(
    "/{job_id}/events", operation_id="getJobEvents", response_model=list[EventPublic],
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def get_job_events(
    job_id: str,
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    after: Annotated[int, Query(ge=0, description="Only events with a higher id.")] = 0,
    last_event_id: Annotated[int | None, Header()] = None,
) -> list[EventPublic] | EventSourceResponse:
    """The job's event log; with `Accept: text/event-stream`, a live SSE stream."""
    await run_in_threadpool(service.check_job, state, tenant, job_id)
    start = last_event_id if last_event_id is not None else after
    if "text/event-stream" in request.headers.get("accept", ""):
        return EventSourceResponse(streaming.job_events(state, job_id, start), ping=15)
    events = await run_in_threadpool(streaming.read_events, state, job_id, start)
    return [EventPublic(**event) for event in events]


@router.post("/{job_id}/cancel", operation_id="cancelJob", response_model=JobPublic,
             responses=ERRORS)
def cancel_job(job_id: str, state: StateDep, tenant: TenantDep) -> JobPublic:
    """Cancel a job: its remaining steps are revoked and it ends `cancelled`."""
    with state.db.write() as session:
        job, events = store.cancel_job(session=session, tenant_id=tenant, job_id=job_id)
        steps = store.job_steps(session=session, job_id=job_id)
    try:
        flag(state.redis, job_id)
        publish(state.redis, events)
        send_deliveries(state.celery, events)
        state.celery.control.revoke([store.step_task_id(job_id, s.index) for s in steps])
    except (RedisError, OperationalError) as exc:
        # The store already says cancelled, and workers skip steps of cancelled jobs; a lost
        # revoke only costs a dispatch.
        log.warning("job %s cancelled, but the broker missed the revoke: %s", job_id, exc)
    return job_public(job, steps)



@router.post("/{job_id}/approve", operation_id="approveStep", response_model=JobPublic,
             responses={**ERRORS, 403: {"model": ErrorBody}})
def approve_step(job_id: str, body: ApprovalRequest, state: StateDep,
                 tenant: TenantDep) -> JobPublic:
    """Approve the job's held step with its token: the step runs.

    The token approves only the step it was issued for, with that exact intent and inputs
    (403 otherwise), once, before it expires (409 after: the step fails).
    """
    service.approve(state, tenant, job_id, body.token)
    return get_job(job_id, state, tenant)


@router.post("/{job_id}/reject", operation_id="rejectStep", response_model=JobPublic,
             responses=ERRORS)
def reject_step(job_id: str, body: RejectionRequest, state: StateDep,
                tenant: TenantDep) -> JobPublic:
    """Reject the job's held step: it fails with the reason, and the job with it."""
    service.reject(state, tenant, job_id, body.reason)
    return get_job(job_id, state, tenant)
