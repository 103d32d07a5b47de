"""On both job stores: starts written late, many at once (`record_starts`, the recorder's
round); a step's begin in one read; its admission without a query of the limits for a tenant
that has none."""

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import event

from core.db import Database
from core.models import JobStatus, StepStatus, utcnow
from core.settings import get_settings
from core.store.ledger import (
    StartRecord,
    StepStart,
    StepVerdict,
    begin_step,
    finish_step,
    record_starts,
    take_start,
    write_start,
)
from core.store.limits import set_concurrency_limit
from core.store.queries import cancel_job, get_job, job_steps, list_events
from core.store.tables import NewStep
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key
from tasks.engine.admission import Admission
from tasks.engine.resources import Resources
from tests.unit.test_store import submit


@pytest.fixture
def db(own_store: Database) -> Database:
    return own_store


@pytest.fixture
def tenant(db: Database) -> str:
    """A new tenant in the module's store (tests share it)."""
    with db.write() as session:
        return create_tenant_key(session=session, vault=Vault([new_key()]),
                                 tenant_name=f"t-{uuid.uuid4().hex[:8]}")[0].id


def _jobs(db: Database, tenant: str, n: int) -> list[str]:
    return [submit(db, tenant, steps=2, key=uuid.uuid4().hex)[0] for _ in range(n)]


def _start(job_id: str, attempts: int = 1) -> StartRecord:
    return StartRecord(job_id, 0, attempts, "host:7", utcnow())


def _written(db: Database, tenant: str, job_id: str) -> tuple[Any, ...]:
    """What the store says of a job once its first step's start is written: the job's
    status, whether it has a start time and its event count; the step's status, runner and
    attempt; the events, numbered."""
    with db.read() as session:
        job = get_job(session=session, tenant_id=tenant, job_id=job_id)
        step = job_steps(session=session, job_id=job_id)[0]
        events = list_events(session=session, job_id=job_id, after=0, limit=100)
    return (job.status, job.started_at is not None, job.event_seq, step.status, step.runner,
            step.attempts, [(e.seq, e.type, e.data.get("attempt")) for e in events])


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements the store runs meanwhile (an executemany counts once)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    # Two on SQLite; on Postgres the reader is the writer with other options, and the
    # writer's listeners hear it too.
    engines = [db._writer] if db._reader.pool is db._writer.pool else [db._writer, db._reader]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    yield seen
    for engine in engines:
        event.remove(engine, "before_cursor_execute", note)


def test_many_starts_are_written_as_one_start_would_be(db: Database, tenant: str) -> None:
    # Given steps running with their starts not written, and one more whose start a worker
    # wrote by itself (with its step's own write)
    many, alone = _jobs(db, tenant, 3), _jobs(db, tenant, 1)[0]
    with db.write() as session:
        take_start(session=session, start=_start(alone))
        write_start(session=session)
    # When the recorder writes the others in one round
    with db.write() as session:
        events = record_starts(session=session, starts=[_start(job_id) for job_id in many])
    # Then each job reads as the one written alone: running since its start, its step
    # running on its runner, `job_started` then `step_started`, numbered after submission's
    expected = _written(db, tenant, alone)
    assert expected[:6] == (JobStatus.running, True, 3, StepStatus.running, "host:7", 1)
    assert expected[6] == [(1, "job_queued", None), (2, "job_started", None),
                           (3, "step_started", 1)]
    for job_id in many:
        assert _written(db, tenant, job_id) == expected
    # And the events to announce are those written, each job's in order
    assert [(e["job_id"], e["id"], e["type"]) for e in events] == [
        (job_id, seq, kind) for job_id in sorted(many)
        for seq, kind in ((2, "job_started"), (3, "step_started"))]


def test_starts_that_are_no_longer_to_write_are_left(db: Database, tenant: str) -> None:
    # Given starts not written: one whose step another delivery started since (a later
    # attempt), one whose job was cancelled, one whose job is gone, and one still to write
    later, cancelled, kept = _jobs(db, tenant, 3)
    with db.write() as session:
        take_start(session=session, start=_start(later, attempts=2))
        write_start(session=session)
    with db.write() as session:
        cancel_job(session=session, tenant_id=tenant, job_id=cancelled)
    before = {job_id: _written(db, tenant, job_id) for job_id in (later, cancelled)}
    # When the recorder writes them in one round
    with db.write() as session:
        events = record_starts(session=session, starts=[
            _start(later), _start(cancelled), _start("job_gone"), _start(kept)])
    # Then only the last is written; the others are as they were
    assert {e["job_id"] for e in events} == {kept}
    assert {job_id: _written(db, tenant, job_id) for job_id in before} == before
    assert _written(db, tenant, kept)[3:6] == (StepStatus.running, "host:7", 1)


def test_a_job_already_running_is_not_started_again(db: Database, tenant: str) -> None:
    # Given a job running since its first step's start, and its second step's start not
    # written
    job_id = _jobs(db, tenant, 1)[0]
    with db.write() as session:
        take_start(session=session, start=_start(job_id))
        write_start(session=session)
    with db.read() as session:
        since = get_job(session=session, tenant_id=tenant, job_id=job_id).started_at
    # When the recorder writes the second step's start
    with db.write() as session:
        events = record_starts(session=session, starts=[
            StartRecord(job_id, 1, 1, "host:7", utcnow() + timedelta(seconds=1))])
    # Then it says only that the step started (the job started before), numbered next
    assert [(e["id"], e["type"]) for e in events] == [(4, "step_started")]
    with db.read() as session:
        job = get_job(session=session, tenant_id=tenant, job_id=job_id)
        second = job_steps(session=session, job_id=job_id)[1]
    # And the job keeps the start it had; the step runs
    assert since is not None
    assert (job.status, job.event_seq, job.started_at) == (JobStatus.running, 4, since)
    assert (second.status, second.attempts) == (StepStatus.running, 1)


def test_a_round_costs_the_same_statements_however_many_starts(
        db: Database, tenant: str, statements: list[str]) -> None:
    # Given two rounds of starts to write, of 2 and of 20 jobs
    rounds = [_jobs(db, tenant, 2), _jobs(db, tenant, 20)]
    counts = []
    for jobs in rounds:
        statements.clear()
        # When each is written
        with db.write() as session:
            record_starts(session=session, starts=[_start(job_id) for job_id in jobs])
        counts.append(len(statements))
    # Then both cost the same few statements (not a few per start)
    assert counts[0] == counts[1] <= 8, statements


def _resources(db: Database) -> Resources:
    return Resources(settings=get_settings(), db=db, redis=redis.Redis(port=1),
                     runner="host:7", vault=Vault([new_key()]))


def _begin(db: Database, job_id: str, admission: Admission, index: int = 0) -> StepStart:
    with db.read() as session:
        return begin_step(session=session, job_id=job_id, index=index, runner="host:7",
                          max_deliveries=5, admit=admission, claim=lambda attempts: attempts)


def test_a_step_begins_with_one_read_of_its_job_itself_and_the_steps_after(
        db: Database, tenant: str, statements: list[str]) -> None:
    # Given a job of four steps (its tenant without limits of its own)
    job_id, _ = submit(db, tenant, key=uuid.uuid4().hex, plan=[
        NewStep(f"debug.step{i}", "tools" if i % 2 else "llm", {"i": i}) for i in range(4)])
    rt = _resources(db)
    try:
        statements.clear()
        # When a worker begins its second step
        start = _begin(db, job_id, Admission(rt), index=1)
    finally:
        rt.close()
    # Then one statement read it, with its own inputs and the steps after it, in order
    assert [s for s in statements if s.lstrip().startswith("SELECT")] == statements[-1:]
    assert (start.verdict, start.intent, start.inputs) == (StepVerdict.run, "debug.step1",
                                                            {"i": 1})
    assert start.rest == [(2, "debug.step2", "llm"), (3, "debug.step3", "tools")]


def test_a_step_ends_with_one_read_of_its_job_and_itself_both_locked(
        db: Database, tenant: str, statements: list[str]) -> None:
    # Given a begun step of a job of two
    job_id, _ = submit(db, tenant, key=uuid.uuid4().hex, plan=[
        NewStep(f"debug.step{i}", "tools", {"i": i}) for i in range(2)])
    rt = _resources(db)
    try:
        start = _begin(db, job_id, Admission(rt))
    finally:
        rt.close()
    assert start.unrecorded is not None
    statements.clear()
    # When its end is written, its start with it
    with db.write() as session:
        take_start(session=session, start=start.unrecorded)
        done = finish_step(session=session, job_id=job_id, index=0, output={"ok": True},
                           rest=start.rest)
    # Then one statement read (and on Postgres locked) the job and the step, and the next
    # step is named
    selects = [s for s in statements if s.lstrip().startswith("SELECT")]
    assert len(selects) == 1, selects
    if not db.is_sqlite:
        assert selects[0].rstrip().endswith("FOR UPDATE")
    assert done.send is not None and done.send.index == 1


def test_a_tenant_without_limits_of_its_own_is_admitted_without_reading_them(
        db: Database, tenant: str, statements: list[str]) -> None:
    # Given a step of a tenant with no concurrency rules of its own
    job_id = _jobs(db, tenant, 1)[0]
    rt = _resources(db)
    try:
        statements.clear()
        # When a worker begins it
        verdict = _begin(db, job_id, Admission(rt)).verdict
    finally:
        rt.close()
    # Then it runs (the ledger read), and no statement read the limits on its own
    assert verdict == StepVerdict.run and statements
    assert [s for s in statements if s.lstrip().startswith(
        "SELECT concurrency_limits")] == [], statements


def test_a_tenant_with_limits_has_them_read_when_its_step_begins(
        db: Database, tenant: str, statements: list[str]) -> None:
    # Given a tenant whose own rule covers a step (Redis down: its slot cannot be asked)
    job_id = _jobs(db, tenant, 1)[0]
    with db.write() as session:
        set_concurrency_limit(session=session, tenant_id=tenant, pattern="debug.*",
                              max_running=1)
    rt = _resources(db)
    try:
        statements.clear()
        # When a worker begins it
        with pytest.raises(redis.ConnectionError):
            _begin(db, job_id, Admission(rt))
    finally:
        rt.close()
    # Then its rules were read, and its slot asked for (which needs Redis)
    assert any(s.lstrip().startswith("SELECT concurrency_limits") for s in statements)
