"""A job's event log: numbered inserts, and the callback a terminal event schedules."""

from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, select

from core.events import LiveEvent, event_payload
from core.models import utcnow
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


def append_events(*, session: Session, job_id: str, items: Items) -> list[LiveEvent]:
    """Append events to a job's log (the job row is locked while numbering them)."""
    seq = session.execute(select(JOBS.c.event_seq).where(JOBS.c.id == job_id)
                          .with_for_update()).scalar_one()
    session.execute(update(JOBS).where(JOBS.c.id == job_id).values(event_seq=seq + len(items)))
    return insert_events(session, job_id, seq, items)
