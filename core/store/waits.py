"""Steps that wait without a worker: held for a person's approval, or waiting for a resume.

An approval token is stored as the SHA-256 of the token with the step's exact intent and
inputs, so it approves that command only; a resume token as its SHA-256. Both are single-use
and end at the step's deadline. The events that hand them out (`step_held`'s token,
`step_waiting`'s resume URL) hold them sealed by the vault, opened only for the job's tenant
(`reveal`).
"""

import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from core.errors import Conflict, Forbidden, NotFound
from core.models import KEY_ID, EventType, JobStatus, StepStatus, utcnow
from core.store.ledger import Ledger, deadline_passed, fail, ledger, record, succeed
from core.store.tables import JOBS, STEPS, Handoff, NextStep, approval_hash, sha256
from core.vault import Vault

# The field of each event that carries a token, sealed at rest.
SEALED_FIELDS = {"step_held": "token", "step_waiting": "resume_url"}


def hold_step(*, session: Session, job_id: str, index: int, inputs: dict[str, Any],
              reason: str, token: str, ttl: float, approve_url: str, vault: Vault) -> Handoff:
    """Hold a running step for approval with `token`, bound to its exact intent and inputs."""
    at = ledger(session, job_id, index)
    if at.step_status != StepStatus.running or at.status.terminal:
        return Handoff()
    deadline = utcnow() + timedelta(seconds=ttl)
    events = record(session, at, {"status": JobStatus.awaiting_approval}, {
        "status": StepStatus.held, "inputs": inputs, "reason": reason, "deadline": deadline,
        "token_hash": approval_hash(token, at.row.intent, inputs), "runner": None,
    }, [(EventType.step_held, {"index": index, "intent": at.row.intent, "inputs": inputs,
                                "reason": reason, "token": vault.seal(token),
                                "expires_at": deadline.isoformat(), "approve": approve_url})])
    return Handoff(events)


def issue_resume_token(*, session: Session, job_id: str, index: int, token: str) -> None:
    """Record the resume token of a running step, before the outside system can use it."""
    session.execute(update(STEPS).where(
        STEPS.c.job_id == job_id, STEPS.c.index == index,
        STEPS.c.status == StepStatus.running).values(token_hash=sha256(token)))


def wait_step(*, session: Session, job_id: str, index: int, ttl: float, reason: str,
              resume_url: str, vault: Vault) -> Handoff:
    """Park a running step until its resume URL is called or `ttl` seconds pass.

    If the resume came while the step was still running, the step succeeds with it now.
    """
    at = ledger(session, job_id, index)
    if at.step_status != StepStatus.running or at.status.terminal:
        return Handoff()
    if at.row.early_output is not None:
        return succeed(session, at, at.row.early_output, [], 0, [])
    deadline = utcnow() + timedelta(seconds=ttl)
    events = record(session, at, {"status": JobStatus.waiting}, {
        "status": StepStatus.waiting, "reason": reason, "deadline": deadline, "runner": None,
    }, [(EventType.step_waiting, {"index": index, "intent": at.row.intent, "reason": reason,
                                   "resume_url": vault.seal(resume_url),
                                   "deadline": deadline.isoformat()})])
    return Handoff(events)


def reveal(kind: str, data: dict[str, Any], vault: Vault) -> dict[str, Any]:
    """An event's data as its tenant sees it: the sealed token opened."""
    field = SEALED_FIELDS.get(kind)
    if field is None or not isinstance(data.get(field), str):
        return data
    return {**data, field: vault.open(data[field])}


def _held(session: Session, tenant_id: str, job_id: str) -> Ledger:
    job = session.execute(select(JOBS.c.tenant_id, JOBS.c.status).where(JOBS.c.id == job_id)
                          .with_for_update()).one_or_none()
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found")
    index = session.execute(select(STEPS.c.index).where(
        STEPS.c.job_id == job_id, STEPS.c.status == StepStatus.held)).scalar_one_or_none()
    if index is None:
        raise Conflict(f"job {job_id} has no step awaiting approval; it is {job.status}")
    at = ledger(session, job_id, index)
    if at.step_status != StepStatus.held:
        raise Conflict(f"step {index} of job {job_id} is no longer awaiting approval")
    return at


def submitting_key(*, session: Session, job_id: str) -> str | None:
    """The id of the API key that submitted the job (its context's KEY_ID), if known."""
    context = session.execute(select(JOBS.c.context).where(JOBS.c.id == job_id)).scalar()
    found = context.get(KEY_ID) if isinstance(context, dict) else None
    return found if isinstance(found, str) else None


def approve_step(*, session: Session, tenant_id: str, job_id: str, token: str,
                 approver: str = "") -> tuple[Handoff, str | None]:
    """Approve the held step with its token: it is sent to run. Returns why not, if expired.

    `approver` (the approving API key's id, never the key) goes into `step_approved`."""
    at = _held(session, tenant_id, job_id)
    if deadline_passed(at, utcnow()):
        return expire(session, at), f"the approval of step {at.index} expired at " \
            f"{at.row.deadline.isoformat()}; the step failed"
    expected = approval_hash(token, at.row.intent, at.row.inputs)
    if not hmac.compare_digest(expected, at.row.token_hash or ""):
        raise Forbidden(f"this token does not approve step {at.index} ({at.row.intent}) of job "
                        f"{job_id}: it was issued for another step, or the command changed")
    events = record(session, at, {"status": JobStatus.running}, {
        "status": StepStatus.pending, "approved_at": utcnow(), "token_hash": None,
        "deadline": None},
        [(EventType.step_approved, {"index": at.index, "intent": at.row.intent,
                                     "approved_by": approver})])
    return Handoff(events, NextStep(job_id, at.index, at.row.intent, at.row.pool)), None


def reject_step(*, session: Session, tenant_id: str, job_id: str, reason: str,
                rejecter: str = "") -> Handoff:
    """Reject the held step: it fails with `reason`, and its job with it; `rejecter` (the
    API key's id) goes into `step_rejected`."""
    at = _held(session, tenant_id, job_id)
    return fail(session, at, f"rejected: {reason}", items=[(EventType.step_rejected, {
        "index": at.index, "reason": reason, "rejected_by": rejecter})])


USED = "unknown resume token, or it was used already"


@dataclass(frozen=True)
class Resumed:
    """What a resume did: the step it reached, what to hand off, and why not if it expired."""

    job_id: str
    index: int
    handoff: Handoff
    refused: str | None = None


def resume_step(*, session: Session, token: str, output: Any) -> Resumed:
    """Resume the step waiting on `token` with `output` (or say why not, if it expired)."""
    found = session.execute(select(STEPS.c.job_id, STEPS.c.index.label("idx")).where(
        STEPS.c.token_hash == sha256(token),
        STEPS.c.status.in_([StepStatus.running, StepStatus.waiting]))).one_or_none()
    if found is None:
        raise NotFound(USED)
    at = ledger(session, found.job_id, found.idx)
    if at.row.token_hash != sha256(token) or at.step_status not in (StepStatus.running,
                                                                     StepStatus.waiting):
        raise NotFound(USED)  # another resume of the same token took the lock first
    resumed = (EventType.step_resumed, {"index": at.index, "intent": at.row.intent})
    if at.step_status == StepStatus.running:
        # The outside system answered before the step finished handing off: keep the output.
        events = record(session, at, {}, {"early_output": output, "token_hash": None},
                        [resumed])
        return Resumed(at.job_id, at.index, Handoff(events))
    if deadline_passed(at, utcnow()):
        return Resumed(at.job_id, at.index, expire(session, at),
                       f"step {at.index} stopped waiting at {at.row.deadline.isoformat()}; "
                       "it failed")
    return Resumed(at.job_id, at.index, succeed(session, at, output, [], 0, [resumed]))


def expire(session: Session, at: Ledger) -> Handoff:
    """Fail a held or waiting step whose deadline passed."""
    what = "no approval" if at.step_status == StepStatus.held else "no resume"
    deadline = at.row.deadline.isoformat() if at.row.deadline else "its deadline"
    return fail(session, at, f"{what} by {deadline}",
                items=[(EventType.step_expired, {"index": at.index, "deadline": deadline})])


def expire_step(*, session: Session, job_id: str, index: int) -> Handoff:
    """Fail step `index` if it is still held or waiting past its deadline."""
    at = ledger(session, job_id, index)
    if at.step_status not in (StepStatus.held, StepStatus.waiting) or at.status.terminal:
        return Handoff()
    if not deadline_passed(at, utcnow()):
        return Handoff()
    return expire(session, at)
