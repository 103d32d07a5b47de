"""Job-store operations: keyword-only functions on a session, one transaction each."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.models import (
    ApiKey,
    IdempotencyRecord,
    Job,
    JobEvent,
    JobStatus,
    JobStep,
    StepStatus,
    Tenant,
    utcnow,
)


@dataclass(frozen=True)
class NewStep:
    """A step of a plan, before it is stored."""

    intent: str
    task: str
    pool: str
    inputs: dict[str, Any] = field(default_factory=dict)


class StepVerdict(StrEnum):
    """What a worker should do with a step it was just handed."""

    run = "run"
    done = "done"
    skip = "skip"


@dataclass
class StepStart:
    """The outcome of `begin_step`: the verdict, the stored output if done, the new events."""

    verdict: StepVerdict
    output: Any = None
    reason: str = ""
    events: list[JobEvent] = field(default_factory=list)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def step_task_id(job_id: str, index: int) -> str:
    """The Celery task id of a step: derived, so cancel can revoke without a lookup."""
    return f"{job_id}-{index}"


def create_tenant_key(*, session: Session, tenant_name: str) -> tuple[Tenant, str]:
    """Create (or reuse) a tenant and give it a new API key; returns the raw key once."""
    tenant = session.exec(select(Tenant).where(Tenant.name == tenant_name)).first()
    if tenant is None:
        tenant = Tenant(id=f"ten_{uuid.uuid4().hex[:16]}", name=tenant_name)
        session.add(tenant)
        session.flush()
    raw_key = f"ork_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=f"key_{uuid.uuid4().hex[:16]}", tenant_id=tenant.id,
                       key_hash=hash_key(raw_key)))
    return tenant, raw_key


def tenant_for_key(*, session: Session, raw_key: str) -> str | None:
    """The tenant id a live API key belongs to, or None."""
    row = session.exec(
        select(ApiKey.tenant_id).where(
            ApiKey.key_hash == hash_key(raw_key), col(ApiKey.revoked_at).is_(None)
        )
    ).first()
    return row


def add_event(*, session: Session, job: Job, type: str, data: dict[str, Any]) -> JobEvent:
    """Append an event to a locked job's log with the next sequence number."""
    job.event_seq += 1
    event = JobEvent(job_id=job.id, seq=job.event_seq, type=type, data=data)
    session.add(event)
    session.add(job)
    return event


def _live_idempotency(*, session: Session, tenant_id: str, key: str) -> IdempotencyRecord | None:
    """The tenant's record for `key`, locked, or None when there is none or it has expired."""
    record = session.get(IdempotencyRecord, (tenant_id, key), with_for_update=True)
    if record is not None and record.expires_at <= utcnow():
        session.delete(record)
        session.flush()
        return None
    return record


def submit_job(
    *,
    session: Session,
    job_id: str,
    tenant_id: str,
    intent: str,
    mode: str,
    inputs: dict[str, Any],
    context: dict[str, Any],
    callback_url: str | None,
    steps: list[NewStep],
    idempotency_key: str,
    window: int,
) -> tuple[Job, bool]:
    """Store a job and its planned steps; returns (job, created) — an existing job on repeat."""
    existing = _live_idempotency(session=session, tenant_id=tenant_id, key=idempotency_key)
    if existing is not None:
        return session.get_one(Job, existing.job_id), False
    job = Job(id=job_id, tenant_id=tenant_id, intent=intent, mode=mode, inputs=inputs,
              context=context, callback_url=callback_url, idempotency_key=idempotency_key,
              step_count=len(steps))
    session.add(job)
    session.flush()
    session.add(IdempotencyRecord(tenant_id=tenant_id, key=idempotency_key, job_id=job_id,
                                  expires_at=utcnow() + timedelta(seconds=window)))
    for index, step in enumerate(steps):
        session.add(JobStep(job_id=job_id, index=index, intent=step.intent, task=step.task,
                            pool=step.pool, inputs=step.inputs))
    add_event(session=session, job=job, type="job_queued",
              data={"intent": intent, "mode": mode, "steps": len(steps)})
    return job, True


def _locked_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def _step(session: Session, job_id: str, index: int) -> JobStep:
    step = session.exec(
        select(JobStep).where(JobStep.job_id == job_id, JobStep.index == index)
    ).first()
    if step is None:
        raise NotFound(f"step {index} of job {job_id} not found")
    return step


def _fail_job(session: Session, job: Job, error: str) -> JobEvent:
    job.status = JobStatus.failed
    job.error = error
    job.finished_at = utcnow()
    return add_event(session=session, job=job, type="job_failed", data={"error": error})


def begin_step(*, session: Session, job_id: str, index: int, max_deliveries: int) -> StepStart:
    """Record that a worker took a step; say whether to run it, reuse its output or skip it."""
    job = _locked_job(session, job_id)
    step = _step(session, job_id, index)
    if job.status.terminal:
        return StepStart(StepVerdict.skip, reason=f"job is {job.status}")
    if step.status == StepStatus.succeeded:
        return StepStart(StepVerdict.done, output=step.output)
    now = utcnow()
    step.attempts += 1
    events: list[JobEvent] = []
    if step.attempts > max_deliveries:
        error = (f"step {index} ({step.intent}) was delivered {step.attempts} times without "
                 "finishing; failed as poison")
        step.status, step.error, step.finished_at = StepStatus.failed, error, now
        session.add(step)
        return StepStart(StepVerdict.skip, reason=error, events=[_fail_job(session, job, error)])
    if job.status == JobStatus.queued:
        job.status, job.started_at = JobStatus.running, now
        events.append(add_event(session=session, job=job, type="job_started", data={}))
    step.status, step.started_at = StepStatus.running, now
    session.add(step)
    events.append(add_event(session=session, job=job, type="step_started",
                            data={"index": index, "intent": step.intent, "pool": step.pool,
                                  "attempt": step.attempts}))
    return StepStart(StepVerdict.run, events=events)


def finish_step(*, session: Session, job_id: str, index: int, output: Any) -> list[JobEvent]:
    """Record a step's output; the last step finalizes the job with it."""
    job = _locked_job(session, job_id)
    step = _step(session, job_id, index)
    if step.status == StepStatus.succeeded:
        return []
    now = utcnow()
    step.status, step.output, step.finished_at = StepStatus.succeeded, output, now
    session.add(step)
    events = [add_event(session=session, job=job, type="step_succeeded",
                        data={"index": index, "intent": step.intent})]
    if job.status.terminal:
        return events
    job.progress = round((index + 1) / max(job.step_count, 1), 4)
    if index == job.step_count - 1:
        job.status, job.result, job.finished_at = JobStatus.succeeded, output, now
        events.append(add_event(session=session, job=job, type="job_succeeded",
                                data={"result": output}))
    return events


def fail_step(*, session: Session, job_id: str, index: int, error: str) -> list[JobEvent]:
    """Record a step's final failure; the job fails with it."""
    job = _locked_job(session, job_id)
    step = _step(session, job_id, index)
    step.status, step.error, step.finished_at = StepStatus.failed, error, utcnow()
    session.add(step)
    events = [add_event(session=session, job=job, type="step_failed",
                        data={"index": index, "intent": step.intent, "error": error})]
    if not job.status.terminal:
        events.append(_fail_job(session, job, f"step {index} ({step.intent}) failed: {error}"))
    return events


def retry_step(*, session: Session, job_id: str, index: int, reason: str) -> list[JobEvent]:
    """Record that a step will be tried again."""
    job = _locked_job(session, job_id)
    return [add_event(session=session, job=job, type="step_retrying",
                      data={"index": index, "reason": reason})]


def cancel_job(*, session: Session, tenant_id: str, job_id: str) -> tuple[Job, list[JobEvent]]:
    """Cancel a job that has not ended; its unfinished steps are cancelled with it."""
    job = _locked_job(session, job_id)
    if job.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found")
    if job.status.terminal:
        raise Conflict(f"job {job_id} already {job.status}; only unfinished jobs can be cancelled")
    now = utcnow()
    job.status, job.finished_at, job.error = JobStatus.cancelled, now, "cancelled by request"
    for step in session.exec(select(JobStep).where(JobStep.job_id == job_id)):
        if step.status in (StepStatus.pending, StepStatus.running):
            step.status, step.finished_at = StepStatus.cancelled, now
            session.add(step)
    return job, [add_event(session=session, job=job, type="job_cancelled", data={})]


def get_job(*, session: Session, tenant_id: str, job_id: str) -> Job:
    """A tenant's job; another tenant's job does not exist."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found")
    return job


def job_steps(*, session: Session, job_id: str) -> list[JobStep]:
    return list(session.exec(select(JobStep).where(JobStep.job_id == job_id)
                             .order_by(col(JobStep.index))))


def list_jobs(
    *,
    session: Session,
    tenant_id: str,
    status: JobStatus | None,
    intent: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[Job]:
    """A tenant's jobs, newest first, after the keyset cursor `before`."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if intent is not None:
        query = query.where(Job.intent == intent)
    if before is not None:
        created, job_id = before
        query = query.where(or_(col(Job.created_at) < created,
                                and_(col(Job.created_at) == created, col(Job.id) < job_id)))
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit)
    return list(session.exec(query))


def list_events(*, session: Session, job_id: str, after: int, limit: int) -> list[JobEvent]:
    """A job's events with `seq` above `after`, oldest first."""
    query = (select(JobEvent).where(JobEvent.job_id == job_id, col(JobEvent.seq) > after)
             .order_by(col(JobEvent.seq)).limit(limit))
    return list(session.exec(query))


def abort_submission(*, session: Session, job_id: str, error: str) -> list[JobEvent]:
    """Fail a job that could not be enqueued and free its idempotency key for a retry."""
    job = _locked_job(session, job_id)
    record = session.get(IdempotencyRecord, (job.tenant_id, job.idempotency_key or ""))
    if record is not None and record.job_id == job_id:
        session.delete(record)
    return [_fail_job(session, job, error)]
