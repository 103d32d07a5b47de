"""Retrying a failed or cancelled job from its first unfinished step.

The steps that succeeded keep their outputs; the rest go back to `pending` and the job to
`queued`, in one transaction with a `job_retried` event, and the first of them is handed off
like any next step. Attempts and events continue; the job's new end schedules a new callback.
"""

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from core.errors import Conflict, NotFound
from core.models import EventType, JobStatus, StepStatus
from core.store.ledger import lock_job, record_job
from core.store.tables import STEPS, Handoff, NextStep

RETRYABLE = frozenset({JobStatus.failed, JobStatus.cancelled})
RESET: dict[str, Any] = {
    "status": StepStatus.pending, "output": None, "error": None, "early_output": None,
    "reason": None, "token_hash": None, "deadline": None, "approved_at": None, "runner": None,
    "started_at": None, "finished_at": None, "attempts_base": STEPS.c.attempts}


def retry_job(*, session: Session, tenant_id: str, job_id: str) -> Handoff:
    """Reset a failed or cancelled job from its first step that did not succeed; the
    `Handoff` sends that step."""
    locked = lock_job(session, job_id)
    if locked.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found")
    status = JobStatus(locked.status)
    if status not in RETRYABLE:
        raise Conflict(f"job {job_id} is {status}; only a failed or cancelled job can be "
                       "retried (cancel a running one first)")
    first = session.execute(
        select(STEPS.c.index.label("idx"), STEPS.c.intent, STEPS.c.pool)
        .where(STEPS.c.job_id == job_id, STEPS.c.status != StepStatus.succeeded)
        .order_by(STEPS.c.index).limit(1)).one_or_none()
    if first is None:
        raise Conflict(f"job {job_id} has no unfinished step to run again")
    session.execute(update(STEPS).where(
        STEPS.c.job_id == job_id, STEPS.c.index >= first.idx,
        STEPS.c.status != StepStatus.succeeded).values(**RESET))
    events = record_job(session, job_id, locked, {
        "status": JobStatus.queued, "error": None, "result": None, "finished_at": None},
        [(EventType.job_retried, {"from_step": first.idx, "was": str(status)})])
    return Handoff(events, NextStep(job_id, first.idx, first.intent, first.pool))
