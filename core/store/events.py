"""A job's event log: numbered inserts, and the callback a terminal event schedules."""

from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, select

from core import deliveries
from core.errors import NotFound
from core.events import LiveEvent, event_payload
from core.models import EventType, Job, utcnow
from core.store.tables import EVENTS, JOBS, Items


def insert_events(session: Session, job_id: str, last_seq: int, items: Items) -> list[LiveEvent]:
    """Insert events numbered after `last_seq`; the caller moves the job's `event_seq` on."""
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {"job_id": job_id, "seq": last_seq + n, "type": kind, "data": data, "created_at": now}
        for n, (kind, data) in enumerate(items, start=1)]
    if rows:
        session.execute(insert(EVENTS), rows)
    return [event_payload(**row) for row in rows]


def callback_item(session: Session,
                  outcome: deliveries.Outcome) -> tuple[EventType, dict[str, Any]]:
    """Schedule the job's callback (the outbox row) and the event that says so."""
    delivery_id = deliveries.schedule(session=session, outcome=outcome)
    return EventType.callback_scheduled, {"delivery_id": delivery_id, "url": outcome.callback_url}


def locked_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def job_events(session: Session, job: Job, items: Items) -> list[LiveEvent]:
    """Append events to a job loaded (and locked) through the ORM; schedule its callback."""
    if job.status.terminal and job.callback_url and job.finished_at:
        outcome = deliveries.Outcome(
            job_id=job.id, tenant_id=job.tenant_id, callback_url=job.callback_url,
            status=str(job.status), intent=job.intent, mode=job.mode, result=job.result,
            error=job.error, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at)
        items = [*items, callback_item(session, outcome)]
    events = insert_events(session, job.id, job.event_seq, items)
    job.event_seq += len(items)
    session.add(job)
    return events


def append_events(*, session: Session, job_id: str, items: Items) -> list[LiveEvent]:
    """Append events to a job's log (the job row is locked while numbering them)."""
    seq = session.execute(select(JOBS.c.event_seq).where(JOBS.c.id == job_id)
                          .with_for_update()).scalar_one()
    session.execute(update(JOBS).where(JOBS.c.id == job_id).values(event_seq=seq + len(items)))
    return insert_events(session, job_id, seq, items)
