"""Job-store operations: keyword-only functions on a session, one transaction each."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, update
from sqlmodel import Session, col, select

from core import deliveries
from core.errors import Conflict, NotFound
from core.events import LiveEvent, event_payload
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

JOBS = Job.__table__  # type: ignore[attr-defined]
STEPS = JobStep.__table__  # type: ignore[attr-defined]
EVENTS = JobEvent.__table__  # type: ignore[attr-defined]
IDEMPOTENCY = IdempotencyRecord.__table__  # type: ignore[attr-defined]


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
    events: list[LiveEvent] = field(default_factory=list)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def step_task_id(job_id: str, index: int) -> str:
    """The Celery task id of a step: derived, so cancel can revoke without a lookup."""
    return f"{job_id}-{index}"


def create_tenant_key(*, session: Session, tenant_name: str,
                      operator: bool = False) -> tuple[Tenant, str]:
    """Create (or reuse) a tenant and give it a new API key; returns the raw key once.

    `operator` makes the tenant an operator (it never unmakes one): its keys may also act on
    what all tenants share, such as the circuit breakers of shared upstreams.
    """
    tenant = session.exec(select(Tenant).where(Tenant.name == tenant_name)).first()
    if tenant is None:
        tenant = Tenant(id=f"ten_{uuid.uuid4().hex[:16]}", name=tenant_name)
    tenant.operator = tenant.operator or operator
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


def is_operator(*, session: Session, tenant_id: str) -> bool:
    """Whether the tenant is an operator."""
    tenant = session.get(Tenant, tenant_id)
    return tenant is not None and tenant.operator


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
    now = utcnow()
    job = Job.model_construct(
        id=job_id, tenant_id=tenant_id, intent=intent, mode=mode, status=JobStatus.queued,
        inputs=inputs, context=context, result=None, error=None, progress=0.0,
        step_count=len(steps), event_seq=1, idempotency_key=idempotency_key,
        callback_url=callback_url, created_at=now, started_at=None, finished_at=None)
    session.execute(insert(JOBS), [job.model_dump()])
    session.execute(insert(IDEMPOTENCY), [{
        "tenant_id": tenant_id, "key": idempotency_key, "job_id": job_id,
        "expires_at": now + timedelta(seconds=window)}])
    session.execute(insert(STEPS), [
        {"job_id": job_id, "index": index, "intent": step.intent, "task": step.task,
         "pool": step.pool, "status": StepStatus.pending, "inputs": step.inputs, "attempts": 0}
        for index, step in enumerate(steps)])
    _insert_events(session, job_id, 0, [("job_queued", {"intent": intent, "mode": mode,
                                                        "steps": len(steps)})])
    return job, True


def _insert_events(
    session: Session, job_id: str, last_seq: int, items: list[tuple[str, dict[str, Any]]]
) -> list[LiveEvent]:
    """Insert events numbered after `last_seq`; the caller moves the job's `event_seq` on."""
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {"job_id": job_id, "seq": last_seq + n, "type": kind, "data": data, "created_at": now}
        for n, (kind, data) in enumerate(items, start=1)]
    if rows:
        session.execute(insert(EVENTS), rows)
    return [event_payload(**row) for row in rows]


@dataclass
class _Ledger:
    """The columns of a job and one of its steps that recording a step needs, job locked."""

    status: JobStatus
    event_seq: int
    step_count: int
    step_status: StepStatus
    attempts: int
    intent: str
    pool: str
    output: Any
    job: Any


LEDGER = (
    select(JOBS.c.status, JOBS.c.event_seq, JOBS.c.step_count,  # type: ignore[call-overload]
           STEPS.c.status.label("step"),
           STEPS.c.attempts, STEPS.c.intent, STEPS.c.pool, STEPS.c.output,
           JOBS.c.tenant_id, JOBS.c.intent.label("job_intent"), JOBS.c.mode,
           JOBS.c.callback_url, JOBS.c.created_at, JOBS.c.started_at)
    .join(STEPS, STEPS.c.job_id == JOBS.c.id)
    .where(JOBS.c.id == bindparam("job_id"), STEPS.c.index == bindparam("index"))
    .with_for_update(of=JOBS)
)


def _ledger(session: Session, job_id: str, index: int) -> _Ledger:
    row = session.execute(LEDGER, {"job_id": job_id, "index": index}).one_or_none()
    if row is None:
        raise NotFound(f"step {index} of job {job_id} not found")
    return _Ledger(JobStatus(row.status), row.event_seq, row.step_count, StepStatus(row.step),
                   row.attempts, row.intent, row.pool, row.output, row)


def _callback_item(session: Session, outcome: deliveries.Outcome) -> tuple[str, dict[str, Any]]:
    """Schedule the job's callback (the outbox row) and the event that says so."""
    delivery_id = deliveries.schedule(session=session, outcome=outcome)
    return "callback_scheduled", {"delivery_id": delivery_id, "url": outcome.callback_url}


def _record(
    session: Session, job_id: str, index: int, ledger: _Ledger, job: dict[str, Any],
    step: dict[str, Any], items: list[tuple[str, dict[str, Any]]],
) -> list[LiveEvent]:
    """Write a step's and its job's new values and the events that say so.

    When these values end the job (and only then: a job that already ended scheduled its
    callback then), its callback is scheduled in the same transaction.
    """
    if "status" in job and JobStatus(job["status"]).terminal and ledger.job.callback_url:
        row = ledger.job
        outcome = deliveries.Outcome(
            job_id=job_id, tenant_id=row.tenant_id, callback_url=row.callback_url,
            status=str(job["status"]), intent=row.job_intent, mode=row.mode,
            result=job.get("result"), error=job.get("error"), created_at=row.created_at,
            started_at=job.get("started_at", row.started_at), finished_at=job["finished_at"])
        items = [*items, _callback_item(session, outcome)]
    if step:
        session.execute(update(STEPS).where(STEPS.c.job_id == job_id, STEPS.c.index == index)
                        .values(**step))
    session.execute(update(JOBS).where(JOBS.c.id == job_id)
                    .values(event_seq=ledger.event_seq + len(items), **job))
    return _insert_events(session, job_id, ledger.event_seq, items)


def _locked_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def _job_events(session: Session, job: Job,
                items: list[tuple[str, dict[str, Any]]]) -> list[LiveEvent]:
    """Append events to a job loaded (and locked) through the ORM; schedule its callback."""
    if job.status.terminal and job.callback_url and job.finished_at:
        outcome = deliveries.Outcome(
            job_id=job.id, tenant_id=job.tenant_id, callback_url=job.callback_url,
            status=str(job.status), intent=job.intent, mode=job.mode, result=job.result,
            error=job.error, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at)
        items = [*items, _callback_item(session, outcome)]
    events = _insert_events(session, job.id, job.event_seq, items)
    job.event_seq += len(items)
    session.add(job)
    return events


def begin_step(*, session: Session, job_id: str, index: int, max_deliveries: int,
               retries: int = 0) -> StepStart:
    """Record that a worker took a step; say whether to run it, reuse its output or skip it.

    `retries` is the Celery retry number of this message: each retry is a new message, so the
    poison limit applies to the deliveries of each one, not to deliberate retries.
    """
    ledger = _ledger(session, job_id, index)
    if ledger.status.terminal:
        return StepStart(StepVerdict.skip, reason=f"job is {ledger.status}")
    if ledger.step_status == StepStatus.succeeded:
        if _continued(session, job_id, index, ledger.step_count):
            return StepStart(StepVerdict.skip, reason="a redelivery of a step whose chain went on")
        return StepStart(StepVerdict.done, output=ledger.output)
    now, attempts = utcnow(), ledger.attempts + 1
    if attempts > max_deliveries + retries:
        error = (f"step {index} ({ledger.intent}) was delivered {attempts} times without "
                 "finishing; failed as poison")
        events = _record(session, job_id, index, ledger,
                         {"status": JobStatus.failed, "error": error, "finished_at": now},
                         {"status": StepStatus.failed, "attempts": attempts, "error": error,
                          "finished_at": now},
                         [("job_failed", {"error": error})])
        return StepStart(StepVerdict.skip, reason=error, events=events)
    items: list[tuple[str, dict[str, Any]]] = []
    job: dict[str, Any] = {}
    if ledger.status == JobStatus.queued:
        job = {"status": JobStatus.running, "started_at": now}
        items.append(("job_started", {}))
    items.append(("step_started", {"index": index, "intent": ledger.intent, "pool": ledger.pool,
                                   "attempt": attempts}))
    events = _record(session, job_id, index, ledger, job,
                     {"status": StepStatus.running, "attempts": attempts, "started_at": now},
                     items)
    return StepStart(StepVerdict.run, events=events)


def _continued(session: Session, job_id: str, index: int, step_count: int) -> bool:
    """Whether the step after `index` was already taken (so its message was already sent)."""
    if index + 1 >= step_count:
        return False
    status = session.execute(select(STEPS.c.status).where(
        STEPS.c.job_id == job_id, STEPS.c.index == index + 1)).scalar_one()
    return StepStatus(status) != StepStatus.pending


def finish_step(*, session: Session, job_id: str, index: int, output: Any) -> list[LiveEvent]:
    """Record a step's output; the last step finalizes the job with it."""
    ledger = _ledger(session, job_id, index)
    if ledger.step_status == StepStatus.succeeded:
        return []
    now = utcnow()
    items: list[tuple[str, dict[str, Any]]] = [
        ("step_succeeded", {"index": index, "intent": ledger.intent})]
    job: dict[str, Any] = {}
    if not ledger.status.terminal:
        job = {"progress": round((index + 1) / max(ledger.step_count, 1), 4)}
        if index == ledger.step_count - 1:
            job |= {"status": JobStatus.succeeded, "result": output, "finished_at": now}
            items.append(("job_succeeded", {"result": output}))
    return _record(session, job_id, index, ledger, job,
                   {"status": StepStatus.succeeded, "output": output, "finished_at": now}, items)


def fail_step(*, session: Session, job_id: str, index: int, error: str) -> list[LiveEvent]:
    """Record a step's final failure; the job fails with it."""
    ledger = _ledger(session, job_id, index)
    now = utcnow()
    items: list[tuple[str, dict[str, Any]]] = [
        ("step_failed", {"index": index, "intent": ledger.intent, "error": error})]
    job: dict[str, Any] = {}
    if not ledger.status.terminal:
        reason = f"step {index} ({ledger.intent}) failed: {error}"
        job = {"status": JobStatus.failed, "error": reason, "finished_at": now}
        items.append(("job_failed", {"error": reason}))
    return _record(session, job_id, index, ledger, job,
                   {"status": StepStatus.failed, "error": error, "finished_at": now}, items)


def retry_step(*, session: Session, job_id: str, index: int, reason: str) -> list[LiveEvent]:
    """Record that a step will be tried again."""
    ledger = _ledger(session, job_id, index)
    return _record(session, job_id, index, ledger, {}, {},
                   [("step_retrying", {"index": index, "reason": reason})])


def cancel_job(
    *, session: Session, tenant_id: str, job_id: str
) -> tuple[Job, list[LiveEvent]]:
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
    return job, _job_events(session, job, [("job_cancelled", {})])


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


def abort_submission(*, session: Session, job_id: str, error: str) -> list[LiveEvent]:
    """Fail a job that could not be enqueued and free its idempotency key for a retry."""
    job = _locked_job(session, job_id)
    record = session.get(IdempotencyRecord, (job.tenant_id, job.idempotency_key or ""))
    if record is not None and record.job_id == job_id:
        session.delete(record)
    job.status, job.error, job.finished_at = JobStatus.failed, error, utcnow()
    return _job_events(session, job, [("job_failed", {"error": error})])


def append_events(*, session: Session, job_id: str,
                  items: list[tuple[str, dict[str, Any]]]) -> list[LiveEvent]:
    """Append events to a job's log (the job row is locked while numbering them)."""
    seq = session.execute(select(JOBS.c.event_seq).where(JOBS.c.id == job_id)
                          .with_for_update()).scalar_one()
    session.execute(update(JOBS).where(JOBS.c.id == job_id).values(event_seq=seq + len(items)))
    return _insert_events(session, job_id, seq, items)


ACTIVE = (JobStatus.queued, JobStatus.running)


def quiet_jobs(*, session: Session, older_than: float, limit: int) -> list[str]:
    """Queued or running jobs with no event for `older_than` seconds, the quietest first.

    These are the jobs whose next message the broker may have lost; the caller asks the broker.
    """
    cutoff = utcnow() - timedelta(seconds=older_than)
    last = (select(EVENTS.c.created_at)
            .where(EVENTS.c.job_id == JOBS.c.id, EVENTS.c.seq == JOBS.c.event_seq)
            .scalar_subquery())
    query = (select(JOBS.c.id).where(JOBS.c.status.in_(ACTIVE), last < cutoff)
             .order_by(last).limit(limit))
    return list(session.execute(query).scalars())


@dataclass
class Resumption:
    """The part of a job's chain to send again: its steps from `start` on, and the event."""

    start: int = 0
    steps: list[NewStep] = field(default_factory=list)
    events: list[LiveEvent] = field(default_factory=list)


def resume(*, session: Session, job_id: str, quiet_for: float) -> Resumption:
    """Take a job whose message is gone for sending again, from its first unfinished step.

    Nothing is taken when the job ended or moved on (an event in the last `quiet_for`
    seconds): then a step is being recorded, or another sweeper resumed it first.
    """
    job = _locked_job(session, job_id)
    last = session.execute(select(EVENTS.c.created_at).where(
        EVENTS.c.job_id == job_id, EVENTS.c.seq == job.event_seq)).scalar_one()
    if job.status not in ACTIVE or last > utcnow() - timedelta(seconds=quiet_for):
        return Resumption()
    steps = job_steps(session=session, job_id=job_id)
    start = next((s.index for s in steps if s.status != StepStatus.succeeded), None)
    if start is None:
        return Resumption()
    events = _job_events(session, job, [("job_requeued", {
        "index": start, "reason": "the broker had no message for it"})])
    return Resumption(start, [NewStep(s.intent, s.task, s.pool, s.inputs)
                              for s in steps[start:]], events)
