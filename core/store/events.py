"""A job's event log: numbered inserts, and the callback a terminal event schedules."""

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session, select

from core.events import LiveEvent, event_payload
from core.models import utcnow
from core.store.tables import EVENTS, JOBS, Items

# Inline: nothing is read back (no RETURNING of the new row's id), so it can be pipelined.
EVENTS_INSERT = insert(EVENTS).inline()


def _rows(job_id: str, last_seq: int, items: Items, now: datetime) -> list[dict[str, Any]]:
    return [{"job_id": job_id, "seq": last_seq + n, "type": kind, "data": data,
             "created_at": now} for n, (kind, data) in enumerate(items, start=1)]


def insert_events(session: Session, job_id: str, last_seq: int, items: Items) -> list[LiveEvent]:
    """Insert events numbered after `last_seq`; the caller moves the job's `event_seq` on."""
    return insert_many(session, [(job_id, last_seq, items)])


def insert_many(session: Session, logs: list[tuple[str, int, Items]]) -> list[LiveEvent]:
    """Insert events into many jobs' logs in one statement: each job's (id, last seq, items)
    numbered after its last seq; the caller moves each job's `event_seq` on."""
    now = utcnow()
    rows = [row for job_id, last_seq, items in logs for row in _rows(job_id, last_seq, items, now)]
    if rows:
        session.execute(EVENTS_INSERT, rows)
    return [event_payload(**row) for row in rows]


def append_many(*, session: Session, items: list[tuple[str, Items]]) -> list[LiveEvent]:
    """Append events to many jobs' logs in the same few statements however many jobs (their
    rows locked in id order while numbering them); in the order given, per job."""
    by_job: dict[str, Items] = {}
    for job_id, job_items in items:
        if job_items:
            by_job.setdefault(job_id, []).extend(job_items)
    if not by_job:
        return []
    seqs = dict(session.execute(
        select(JOBS.c.id, JOBS.c.event_seq).where(JOBS.c.id.in_(sorted(by_job)))
        .order_by(JOBS.c.id).with_for_update()).all())
    session.execute(update(JOBS).where(JOBS.c.id == bindparam("b_id")).values(
        event_seq=bindparam("b_seq")),
        [{"b_id": job_id, "b_seq": seqs[job_id] + len(job_items)}
         for job_id, job_items in by_job.items()])
    return insert_many(session, [(job_id, seqs[job_id], job_items)
                                 for job_id, job_items in by_job.items()])


def append_events(*, session: Session, job_id: str, items: Items) -> list[LiveEvent]:
    """Append events to a job's log (the job row is locked while numbering them)."""
    return append_many(session=session, items=[(job_id, items)])
