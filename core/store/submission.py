"""Submitting a job: idempotency, the job row, its planned steps and first events."""

from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlmodel import Session

from core.db import pipelined
from core.models import EventType, Job, JobStatus, StepStatus, utcnow
from core.store.events import insert_events
from core.store.tables import EVENTS, IDEMPOTENCY, JOBS, STEPS, Handoff, Items, NewStep, NextStep

# Built once: a submission's statements (the idempotency lookup is asked of every write).
KEYED = (select(IDEMPOTENCY.c.job_id, IDEMPOTENCY.c.expires_at)
         .where(IDEMPOTENCY.c.tenant_id == bindparam("tenant_id"),
                IDEMPOTENCY.c.key == bindparam("key")).with_for_update())
EXPIRED = delete(IDEMPOTENCY).where(IDEMPOTENCY.c.tenant_id == bindparam("tenant_id"),
                                    IDEMPOTENCY.c.key == bindparam("key"))
# Inline: none reads anything back (a step row's id), so they can share one pipeline.
JOBS_INSERT, IDEMPOTENCY_INSERT, STEPS_INSERT = (
    insert(JOBS).inline(), insert(IDEMPOTENCY).inline(), insert(STEPS).inline())


def _live_idempotency(*, session: Session, tenant_id: str, key: str) -> str | None:
    """The job of the tenant's record for `key` (locked), or None when there is none or it
    has expired (then it is removed)."""
    params = {"tenant_id": tenant_id, "key": key}
    record = session.execute(KEYED, params).one_or_none()
    if record is not None and record.expires_at <= utcnow():
        session.execute(EXPIRED, params)
        return None
    return None if record is None else str(record.job_id)


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
    idempotency_key: str | None,
    window: int,
) -> tuple[Job, bool, Handoff]:
    """Store a job and its planned steps; returns (job, created, what to send).

    An existing job is returned on repeat of `idempotency_key` (with nothing to send); without
    a key (a read the caller did not key) every submission is a new job. A plan with no steps
    ends the job at once: the end of a job is decided from its step rows alone.
    """
    existing = None if idempotency_key is None else _live_idempotency(
        session=session, tenant_id=tenant_id, key=idempotency_key)
    if existing is not None:
        return session.get_one(Job, existing), False, Handoff()
    now = utcnow()
    empty = not steps
    job = Job.model_construct(
        id=job_id, tenant_id=tenant_id, intent=intent, mode=mode,
        status=JobStatus.succeeded if empty else JobStatus.queued, inputs=inputs,
        context=context, result=None, error=None, progress=1.0 if empty else 0.0,
        event_seq=2 if empty else 1, idempotency_key=idempotency_key, callback_url=callback_url,
        created_at=now, started_at=None, finished_at=now if empty else None)
    items: Items = [(EventType.job_queued, {"intent": intent, "mode": mode, "steps": len(steps)})]
    if empty:
        items.append((EventType.job_succeeded, {"result": None}))
    with pipelined(session):  # a repeat's key (an IntegrityError) is raised as it ends
        session.execute(JOBS_INSERT, [job.model_dump()])
        if idempotency_key is not None:
            session.execute(IDEMPOTENCY_INSERT, [{
                "tenant_id": tenant_id, "key": idempotency_key, "job_id": job_id,
                "expires_at": now + timedelta(seconds=window)}])
        if steps:
            session.execute(STEPS_INSERT, step_rows(job_id, 0, steps))
        events = insert_events(session, job_id, 0, items)
    send = None if empty else NextStep(job_id, 0, steps[0].intent, steps[0].pool)
    return job, True, Handoff(events, send)


def step_rows(job_id: str, start: int, steps: list[NewStep]) -> list[dict[str, Any]]:
    """Ledger rows for `steps`, numbered from `start`."""
    return [{"job_id": job_id, "index": index, "intent": step.intent, "pool": step.pool,
             "status": StepStatus.pending, "inputs": step.inputs, "attempts": 0}
            for index, step in enumerate(steps, start=start)]


def discard_submission(*, session: Session, job_id: str) -> None:
    """Remove a job that could not be enqueued, as if it had never been submitted.

    The client was told it was not started (503), so nothing of it may remain to be seen,
    resumed or called back; its idempotency key is free for the retry.
    """
    session.execute(delete(EVENTS).where(EVENTS.c.job_id == job_id))
    session.execute(delete(STEPS).where(STEPS.c.job_id == job_id))
    session.execute(delete(IDEMPOTENCY).where(IDEMPOTENCY.c.job_id == job_id))
    session.execute(delete(JOBS).where(JOBS.c.id == job_id))
