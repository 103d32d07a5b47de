"""Starts written late: when Redis cannot lease one (written at once, as the ledger's own
guard), and the recorder's round."""

import redis

from core.db import Database
from core.models import StepStatus, utcnow
from core.settings import get_settings
from core.store.ledger import StartRecord, StepVerdict
from tasks.engine.admission import Admission
from tasks.engine.base import Delivery
from tasks.engine.resources import Resources
from tasks.engine.starts import Starts
from tasks.engine.steps import STEP_TASKS
from tests.unit.keys import VAULT
from tests.unit.test_store import load, submit


def test_a_step_redis_cannot_lease_has_its_start_written_before_it_runs(
        db: Database, tenant: str) -> None:
    # Given a pending step, and Redis not answering (a broker outage)
    job_id, _ = submit(db, tenant, steps=1)
    rt = Resources(settings=get_settings(), db=db, redis=redis.Redis(port=1), runner="test:1",
                   vault=VAULT)
    try:
        # When a worker holding its message begins it
        start = STEP_TASKS["tools"]._begin(rt, Delivery(job_id, 0), Admission(rt))
    finally:
        rt.close()
    # Then it runs, with its start written already (nothing left to write late)
    assert start.verdict == StepVerdict.run and start.unrecorded is None
    assert [e["type"] for e in start.events] == ["job_started", "step_started"]
    step = load(db, tenant, job_id)[1][0]
    assert (step.status, step.runner, step.attempts) == (StepStatus.running, "test:1", 1)


def test_the_recorder_writes_the_due_starts_past_one_whose_job_is_gone(
        db: Database, tenant: str) -> None:
    # Given two steps running past `after` with their starts not written, one of a job that
    # was removed meanwhile (a batch whose broker trip failed after its messages arrived)
    job_id, _ = submit(db, tenant, steps=1)
    starts = Starts(db, redis.Redis(port=1), "test:1", lease_seconds=10, after=0)
    starts.close()  # its recorder thread stopped before it starts: this test runs the round
    gone = starts.hold(StartRecord("job_gone", 0, 1, "test:1", utcnow()))
    kept = starts.hold(StartRecord(job_id, 0, 1, "test:1", utcnow()))
    # When the recorder's round runs
    assert starts.record_due() == 2
    # Then the other start is written, and neither is tried again
    step = load(db, tenant, job_id)[1][0]
    assert (step.status, step.runner, step.attempts) == (StepStatus.running, "test:1", 1)
    assert gone.recorded and kept.recorded
