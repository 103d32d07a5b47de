"""Reading jobs, their steps and events, and cancelling a job."""

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, update
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.events import LiveEvent
from core.models import (
    FINISHED_STEPS,
    EventType,
    Job,
    JobEvent,
    JobStatus,
    JobStep,
    StepStatus,
    utcnow,
)
from core.store.ledger import lock_job, record_job
from core.store.tables import JOBS, STEPS
from core.store.waits import reveal
from core.vault import Vault

PENDING_EVENTS = {StepStatus.held: EventType.step_held, StepStatus.waiting: EventType.step_waiting}
WAITING_STEPS = frozenset(PENDING_EVENTS)


# Built once, read as rows (no ORM identity map): a job and its steps are read at every poll
# and every `wait=true` answer; through the ORM each read cost about twice as long.
JOB_BY_ID = select(JOBS).where(JOBS.c.id == bindparam("job_id"))
STEPS_OF_JOB = select(STEPS).where(STEPS.c.job_id == bindparam("job_id")).order_by(STEPS.c.index)


def get_job(*, session: Session, tenant_id: str, job_id: str) -> Job:
    """A tenant's job (a snapshot, not tracked by the session); another tenant's job does not
    exist."""
    row = session.execute(JOB_BY_ID, {"job_id": job_id}).one_or_none()
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found")
    return Job.model_construct(**row._mapping)


def job_steps(*, session: Session, job_id: str) -> list[JobStep]:
    """A job's steps in order (snapshots, not tracked by the session)."""
    return [JobStep.model_construct(**row._mapping)
            for row in session.execute(STEPS_OF_JOB, {"job_id": job_id})]


def pending_action(*, session: Session, steps: list[JobStep],
                   vault: Vault) -> dict[str, Any] | None:
    """What a held or waiting step waits for: the data of its latest held/waiting event, its
    token opened (this is shown to the job's tenant only)."""
    step = next((s for s in steps if s.status in PENDING_EVENTS), None)
    if step is None:
        return None
    event = session.exec(
        select(JobEvent).where(JobEvent.job_id == step.job_id,
                               JobEvent.type == PENDING_EVENTS[step.status])
        .order_by(col(JobEvent.seq).desc()).limit(1)).first()
    data = reveal(event.type, event.data, vault) if event else {"index": step.index}
    return {"status": str(step.status), **data}


def pending_steps(*, session: Session, tenant_id: str, limit: int) -> list[JobStep]:
    """A tenant's held and waiting steps across its jobs, the nearest deadline first."""
    query = (select(JobStep).join(Job, col(Job.id) == col(JobStep.job_id))
             .where(Job.tenant_id == tenant_id, col(JobStep.status).in_(list(WAITING_STEPS)))
             .order_by(col(JobStep.deadline), col(JobStep.job_id)).limit(limit))
    return list(session.exec(query))


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


def cancel_job(
    *, session: Session, tenant_id: str, job_id: str
) -> tuple[Job, list[LiveEvent]]:
    """Cancel a job that has not ended; its unfinished steps (held and waiting too) with it."""
    locked = lock_job(session, job_id)
    if locked.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found")
    status = JobStatus(locked.status)
    if status.terminal:
        raise Conflict(f"job {job_id} already {status}; only unfinished jobs can be cancelled")
    now = utcnow()
    session.execute(update(STEPS).where(
        STEPS.c.job_id == job_id, STEPS.c.status.not_in(list(FINISHED_STEPS))).values(
        status=StepStatus.cancelled, finished_at=now, token_hash=None))
    events = record_job(session, job_id, locked, {
        "status": JobStatus.cancelled, "finished_at": now, "error": "cancelled by request"},
        [(EventType.job_cancelled, {})])
    return session.get_one(Job, job_id, populate_existing=True), events
