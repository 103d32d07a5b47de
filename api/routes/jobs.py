"""`/v1/jobs`: submit, read, list, follow and cancel jobs."""

import base64
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from api import conversation, service, streaming
from api.deps import CallerDep, StateDep, TenantDep
from api.openapi import BODY, KEYED, POST, errors, job_links
from api.schemas import (
    MAX_EVENT_ID,
    ApprovalRequest,
    EventPublic,
    IdempotencyKey,
    JobAccepted,
    JobBatchAccepted,
    JobBatchCreate,
    JobCreate,
    JobIdPath,
    JobPage,
    JobPublic,
    LastEventId,
    RejectionRequest,
    deduplication,
    job_public,
    links_for,
)
from core.errors import InvalidRequest
from core.models import JobStatus
from core.store import queries

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
# Every error a job route may answer; new routes name their own with `errors(...)`.


@router.post("", operation_id="createJob", status_code=202, summary="Submit a job",
             response_model=JobAccepted | JobPublic, responses={
                 **errors(*KEYED, *BODY, 402, 404),
                 202: {"model": JobAccepted, "description": "The job is on its way.",
                       "links": job_links()},
                 200: {"model": JobPublic, "description": "The job ended within `wait`."}})
async def create_job(
    body: JobCreate,
    state: StateDep,
    caller: CallerDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted | JobPublic:
    """Submit an intent with its inputs, or a free-text `prompt` (planned by the `llm` pool
    into steps that run and end in an answer). Answers 202 at once with the job's id and
    links, or 200 with the finished job if it ends within `wait` seconds. An unknown intent is
    a 404 listing the available ones; a repeated request (same `Idempotency-Key`, or the same
    tenant, intent and inputs of a write within the idempotency window) answers the same job
    with `deduplicated: true`; a read runs again unless keyed."""
    intent, inputs = body.target()
    request = service.Request(
        tenant_id=caller.tenant_id, intent=intent, inputs=inputs, mode=body.mode,
        context=body.context, callback_url=str(body.callback_url) if body.callback_url else None,
        idempotency_key=idempotency_key, key_id=caller.key_id, internal=body.prompt is not None)
    wait = service.clamp_wait(body.wait, state.settings.orchestrator.sync_timeout)
    await conversation.check_prompt(state, request)
    job, steps, created = await service.submit(state, request, wait)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    replay = deduplication(job, created)
    if job.status.terminal and wait > 0:
        response.status_code = 200
        return job_public(job, steps).model_copy(update=replay)
    return JobAccepted(job_id=job.id, status=job.status, intent=job.intent, mode=job.mode,
                       links=links_for(job.id), **replay)


@router.post(":batch", operation_id="createJobs", status_code=202,
             summary="Submit up to 1,000 jobs at once", response_model=JobBatchAccepted,
             responses=errors(*KEYED, *BODY, 403))
async def create_jobs(body: JobBatchCreate, state: StateDep,
                      caller: CallerDep) -> JobBatchAccepted:
    """Submit up to 1,000 intents in one request: stored in one transaction and sent in one
    broker connection, each job with its own idempotency key (`idempotency_key`, else the
    default key of a write) and result. Answers 202 with each job as `POST /v1/jobs` would, in
    the order sent; an item that is not valid refuses the batch (422 naming `jobs.N`), and
    nothing of it is stored."""
    requests = [service.Request(
        tenant_id=caller.tenant_id, intent=item.intent, inputs=item.inputs, mode=item.mode,
        context=item.context, callback_url=str(item.callback_url) if item.callback_url else None,
        idempotency_key=item.idempotency_key, key_id=caller.key_id) for item in body.jobs]
    submitted = await run_in_threadpool(service.submit_batch, state, requests)
    return JobBatchAccepted(jobs=[JobAccepted(
        job_id=job.id, status=job.status, intent=job.intent, mode=job.mode,
        links=links_for(job.id), **deduplication(job, created)) for job, created in submitted])


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    if not text:
        return None
    try:
        created, job_id = base64.urlsafe_b64decode(text.encode()).decode().split("|", 1)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has a UTC offset")
        return moment, job_id
    except ValueError as exc:
        raise InvalidRequest("cursor: not a cursor from a previous page", "cursor") from exc


@router.get("", operation_id="listJobs", response_model=JobPage, summary="List jobs",
            responses=errors(*KEYED, 422))
def list_jobs(
    state: StateDep,
    tenant: TenantDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    intent: Annotated[str | None, Query(description="Only jobs of this intent.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page.")] = 50,
    cursor: Annotated[str | None, Query(
        description="`next_cursor` of the previous page.")] = None,
) -> JobPage:
    """The caller's jobs, newest first, filtered by status and intent, a page at a time;
    steps are left out (read one job for them)."""
    with state.db.read() as session:
        jobs = queries.list_jobs(session=session, tenant_id=tenant, status=status, intent=intent,
                               limit=limit, before=_cursor(cursor))
    next_cursor = None
    if len(jobs) == limit:
        last = jobs[-1]
        next_cursor = base64.urlsafe_b64encode(
            f"{last.created_at.isoformat()}|{last.id}".encode()).decode()
    return JobPage(items=[job_public(job, []) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", operation_id="getJob", response_model=JobPublic, summary="Get a job",
            responses=errors(*KEYED, 404))
def get_job(job_id: JobIdPath, state: StateDep, tenant: TenantDep) -> JobPublic:
    """A job with its status, progress, steps, result, error and timings, and under `pending`
    what a held or waiting step awaits (the approval token, or the resume URL)."""
    job, steps = service.load_job(state, tenant, job_id)
    return job_public(job, steps, service.pending_action(state, steps))


@router.get(
    "/{job_id}/events", operation_id="getJobEvents", response_model=list[EventPublic],
    summary="Read or stream a job's events",
    responses={**errors(*KEYED, 404, 422), 200: {
        "description": "The events as a JSON list, or with `Accept: text/event-stream` a live "
        "SSE stream (`id` is the event id, `event` its type, `data` the event as JSON) that "
        "ends after the job's terminal event.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def get_job_events(
    job_id: JobIdPath,
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID,
                                description="Only events with a higher id.")] = 0,
    last_event_id: LastEventId = None,
) -> list[EventPublic] | EventSourceResponse:
    """The job's event log, oldest first; with `Accept: text/event-stream`, a live SSE stream
    that a client resumes with `Last-Event-ID`."""
    await run_in_threadpool(service.check_job, state, tenant, job_id)
    start = last_event_id if last_event_id is not None else after
    if "text/event-stream" in request.headers.get("accept", ""):
        return EventSourceResponse(streaming.job_events(state, job_id, start), ping=15)
    events = await run_in_threadpool(streaming.read_events, state, job_id, start)
    return [EventPublic(**event) for event in events]


@router.post("/{job_id}/cancel", operation_id="cancelJob", response_model=JobPublic,
             summary="Cancel a job", responses=errors(*KEYED, *POST, 404, 409))
def cancel_job(job_id: JobIdPath, state: StateDep, tenant: TenantDep) -> JobPublic:
    """Cancel a job: its remaining steps are revoked and it ends `cancelled`; a job that
    already ended is a 409."""
    job, steps = service.cancel(state, tenant, job_id)
    return job_public(job, steps)


@router.post("/{job_id}/retry", operation_id="retryJob", response_model=JobPublic,
             summary="Retry a job from its failed step", responses=errors(*KEYED, *POST, 404, 409))
def retry_job(job_id: JobIdPath, state: StateDep, tenant: TenantDep) -> JobPublic:
    """Run a failed or cancelled job again from its first step that did not succeed: the
    steps that succeeded keep their outputs, attempts and events continue (a `job_retried`
    event), and its callback is sent again when it ends. Any other job is a 409."""
    service.retry(state, tenant, job_id)
    return get_job(job_id, state, tenant)


@router.post("/{job_id}/approve", operation_id="approveStep", response_model=JobPublic,
             summary="Approve a held step", responses=errors(*KEYED, *BODY, 403, 404, 409))
def approve_step(job_id: JobIdPath, body: ApprovalRequest, state: StateDep,
                 caller: CallerDep) -> JobPublic:
    """Approve the job's held step with the token issued for it: the step runs.

    The token approves only the step it was issued for, with that exact intent and inputs
    (403 otherwise), once (409 after), before it expires (409 after: the step fails).
    ORCHESTRATOR_APPROVAL_POLICY decides which keys may: `scope` (an `approve` key),
    `other-key` (one other than the job's submitter: 403 for it), `any` (`jobs:write` too).
    """
    service.approve(state, caller.tenant_id, job_id, body.token, caller.key_id)
    return get_job(job_id, state, caller.tenant_id)


@router.post("/{job_id}/reject", operation_id="rejectStep", response_model=JobPublic,
             summary="Reject a held step", responses=errors(*KEYED, *BODY, 404, 409))
def reject_step(job_id: JobIdPath, body: RejectionRequest, state: StateDep,
                caller: CallerDep) -> JobPublic:
    """Reject the job's held step: it fails with the reason, and the job with it (409 when no
    step is held)."""
    service.reject(state, caller.tenant_id, job_id, body.reason, caller.key_id)
    return get_job(job_id, state, caller.tenant_id)
