"""Finding work that stalled: jobs whose message the broker lost, steps whose worker died,
holds and waits past their deadline."""

from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, select

from core.models import EventType, JobStatus, StepStatus, utcnow
from core.store.ledger import ledger, lock_job, record, record_job
from core.store.queries import job_steps
from core.store.tables import EVENTS, JOBS, STEPS, Handoff, NextStep

ACTIVE = (JobStatus.queued, JobStatus.running)


def quiet_jobs(*, session: Session, older_than: float, limit: int) -> list[str]:
    """Queued or running jobs with no event for `older_than` seconds, the quietest first.

    These are the jobs whose next message the broker may have lost; the caller asks the broker.
    Held and waiting jobs are not among them: they have no message by design.
    """
    cutoff = utcnow() - timedelta(seconds=older_than)
    last = (select(EVENTS.c.created_at)
            .where(EVENTS.c.job_id == JOBS.c.id, EVENTS.c.seq == JOBS.c.event_seq)
            .scalar_subquery())
    query = (select(JOBS.c.id).where(JOBS.c.status.in_(ACTIVE), last < cutoff)
             .order_by(last).limit(limit))
    return list(session.execute(query).scalars())


def resume(*, session: Session, job_id: str, quiet_for: float) -> Handoff:
    """Take a job whose message is gone for sending again, from its first unfinished step.

    Nothing is taken when the job ended or moved on (an event in the last `quiet_for`
    seconds): then a step is being recorded, or another sweeper resumed it first.
    """
    locked = lock_job(session, job_id)
    last = session.execute(select(EVENTS.c.created_at).where(
        EVENTS.c.job_id == job_id, EVENTS.c.seq == locked.event_seq)).scalar_one()
    if locked.status not in ACTIVE or last > utcnow() - timedelta(seconds=quiet_for):
        return Handoff()
    step = next((s for s in job_steps(session=session, job_id=job_id)
                 if s.status in (StepStatus.pending, StepStatus.running)), None)
    if step is None:
        return Handoff()
    events = record_job(session, job_id, locked, {}, [(EventType.job_requeued, {
        "index": step.index, "reason": "the broker had no message for it"})])
    return Handoff(events, NextStep(job_id, step.index, step.intent, step.pool))


@dataclass(frozen=True)
class Orphan:
    """A running step and the runner (host:pid/start) that took it."""

    job_id: str
    index: int
    runner: str


def running_steps(*, session: Session, started_before: float, limit: int) -> list[Orphan]:
    """Steps running for more than `started_before` seconds, with their runners."""
    cutoff = utcnow() - timedelta(seconds=started_before)
    rows = session.execute(
        select(STEPS.c.job_id, STEPS.c.index.label("idx"), STEPS.c.runner)
        .where(STEPS.c.status == StepStatus.running, STEPS.c.runner.is_not(None),
               STEPS.c.started_at < cutoff).limit(limit))
    return [Orphan(r.job_id, r.idx, r.runner) for r in rows]


def requeue_orphan(*, session: Session, orphan: Orphan) -> Handoff:
    """Send again a step whose runner stopped; the new delivery takes it over."""
    at = ledger(session, orphan.job_id, orphan.index)
    if (at.step_status != StepStatus.running or at.row.runner != orphan.runner
            or at.status.terminal):
        return Handoff()
    events = record(session, at, {}, {"runner": None}, [(EventType.step_requeued, {
        "index": orphan.index, "reason": f"its worker {orphan.runner} stopped"})])
    return Handoff(events, NextStep(orphan.job_id, orphan.index, at.row.intent, at.row.pool))


def requeue_held(*, session: Session, job_id: str, index: int, runner: str) -> Handoff:
    """Send again a step whose message `runner` had received when it stopped, its start not
    written (not begun, or running with its start still to write: `tasks.engine.starts`).

    Only a step still pending is sent: one whose start was written has a runner of its own (a
    live one keeps it; `requeue_orphan` takes a dead one's), and one that ended is done.
    """
    at = ledger(session, job_id, index)
    if at.status.terminal or at.step_status != StepStatus.pending:
        return Handoff()
    events = record(session, at, {}, {}, [(EventType.step_requeued, {
        "index": index, "reason": f"its worker {runner} stopped before its start was written"})])
    return Handoff(events, NextStep(job_id, index, at.row.intent, at.row.pool))


def expired_steps(*, session: Session, limit: int) -> list[tuple[str, int]]:
    """Held or waiting steps past their deadline."""
    rows = session.execute(
        select(STEPS.c.job_id, STEPS.c.index.label("idx"))
        .where(STEPS.c.status.in_([StepStatus.held, StepStatus.waiting]),
               STEPS.c.deadline <= utcnow()).limit(limit))
    return [(r.job_id, r.idx) for r in rows]
