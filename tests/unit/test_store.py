"""Job-store operations on a real SQLite file (no services needed)."""

import json
import time
from datetime import timedelta

import pytest

from core.db import Database
from core.errors import Conflict, NotFound
from core.models import IdempotencyRecord, JobStatus, StepStatus
from core.store import recovery
from core.store.ledger import StepStart, StepVerdict, begin_step, fail_step, finish_step, retry_step
from core.store.queries import cancel_job, get_job, job_steps, list_events
from core.store.recovery import quiet_jobs
from core.store.retries import retry_job
from core.store.submission import discard_submission, submit_job
from core.store.tables import Handoff, NewStep, new_job_id
from core.store.tenants import create_tenant_key, tenant_for_key
from core.vault import Vault, new_key


def submit(db: Database, tenant: str, steps: int = 2, key: str = "k1",
           window: int = 3600, plan: list[NewStep] | None = None) -> tuple[str, bool]:
    with db.write() as session:
        job, created, _ = submit_job(
            session=session, job_id=new_job_id(), tenant_id=tenant, intent="debug.chain",
            mode="agent", inputs={}, context={}, callback_url=None,
            steps=plan if plan is not None else [
                NewStep("debug.chain.link", "tools", {"i": i}) for i in range(steps)],
            idempotency_key=key, window=window)
        return job.id, created


def begin(db: Database, job_id: str, index: int, max_deliveries: int = 3,
          retries: int = 0, runner: str = "host:1",
          live: frozenset[str] = frozenset()) -> StepStart:
    with db.write() as session:
        return begin_step(session=session, job_id=job_id, index=index, runner=runner,
                                max_deliveries=max_deliveries, retries=retries,
                                is_live=lambda r: r in live)


def finish(db: Database, job_id: str, index: int, output: object,
           extend: list[NewStep] | None = None, max_steps: int = 0) -> list[str]:
    with db.write() as session:
        handoff = finish_step(session=session, job_id=job_id, index=index, output=output,
                                    extend=extend, max_steps=max_steps)
        return [e["type"] for e in handoff.events]


def load(db: Database, tenant: str, job_id: str):  # type: ignore[no-untyped-def]
    with db.read() as session:
        return (get_job(session=session, tenant_id=tenant, job_id=job_id),
                job_steps(session=session, job_id=job_id))


def test_api_keys_map_to_their_tenant(db: Database, tenant: str) -> None:
    with db.write() as session:
        again, raw = create_tenant_key(session=session, vault=Vault([new_key()]),
                                       tenant_name="acme")
    assert again.id == tenant
    with db.read() as session:
        assert tenant_for_key(session=session, raw_key=raw) == tenant
        assert tenant_for_key(session=session, raw_key=raw + "x") is None


def test_same_key_inside_the_window_returns_the_same_job(db: Database, tenant: str) -> None:
    first, created = submit(db, tenant)
    second, created_again = submit(db, tenant)
    assert created and not created_again and first == second


def test_an_expired_key_makes_a_new_job(db: Database, tenant: str) -> None:
    first, _ = submit(db, tenant)
    with db.write() as session:
        record = session.get_one(IdempotencyRecord, (tenant, "k1"))
        record.expires_at -= timedelta(hours=2)
        session.add(record)
    second, created = submit(db, tenant)
    assert created and second != first


def test_steps_run_in_order_and_the_last_finalizes(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=2)
    assert begin(db, job_id, 0).verdict == StepVerdict.run
    assert finish(db, job_id, 0, {"a": 1}) == ["step_succeeded"]
    job, _ = load(db, tenant, job_id)
    assert job.status == JobStatus.running and job.progress == 0.5
    begin(db, job_id, 1)
    assert finish(db, job_id, 1, {"b": 2}) == ["step_succeeded", "job_succeeded"]
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.succeeded and job.result == {"b": 2}
    assert [s.status for s in steps] == [StepStatus.succeeded] * 2


def test_a_redelivered_finished_step_is_not_run_again(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    begin(db, job_id, 0)
    finish(db, job_id, 0, {"done": True})
    again = begin(db, job_id, 0)
    assert again.verdict == StepVerdict.done
    assert again.next is not None and again.next.index == 1, "the next step is sent again"
    assert finish(db, job_id, 0, {"done": "twice"}) == []


def test_a_step_delivered_too_often_fails_as_poison(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    for n in range(2):
        assert begin(db, job_id, 0, max_deliveries=2, runner=f"dead:{n}").verdict == \
            StepVerdict.run
    poisoned = begin(db, job_id, 0, max_deliveries=2)
    assert poisoned.verdict == StepVerdict.skip
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.failed and "failed as poison" in (job.error or "")
    assert steps[0].status == StepStatus.failed


def test_a_failed_step_fails_the_job(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    begin(db, job_id, 0)
    with db.write() as session:
        handoff = fail_step(session=session, job_id=job_id, index=0, error="E: boom")
    events = handoff.events
    assert [e["type"] for e in events] == ["step_failed", "job_failed"]
    job, _ = load(db, tenant, job_id)
    assert job.error == "step 0 (debug.chain.link) failed: E: boom"


def test_cancel_ends_the_job_and_later_steps_are_skipped(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    begin(db, job_id, 0)
    with db.write() as session:
        cancel_job(session=session, tenant_id=tenant, job_id=job_id)
    assert begin(db, job_id, 1).verdict == StepVerdict.skip
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.cancelled
    assert [s.status for s in steps] == [StepStatus.cancelled] * 2
    with db.write() as session, pytest.raises(Conflict):
        cancel_job(session=session, tenant_id=tenant, job_id=job_id)


def test_other_tenants_cannot_read_or_cancel(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    with db.read() as session, pytest.raises(NotFound):
        get_job(session=session, tenant_id="someone-else", job_id=job_id)
    with db.write() as session, pytest.raises(NotFound):
        cancel_job(session=session, tenant_id="someone-else", job_id=job_id)


def test_event_sequence_rises_by_one(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=1)
    begin(db, job_id, 0)
    finish(db, job_id, 0, 1)
    with db.read() as session:
        events = list_events(session=session, job_id=job_id, after=0, limit=100)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        tail = list_events(session=session, job_id=job_id, after=3, limit=100)
        assert [e.type for e in tail] == ["step_succeeded", "job_succeeded"]


def test_a_discarded_submission_leaves_nothing_and_frees_its_key(db: Database,
                                                                  tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    with db.write() as session:
        discard_submission(session=session, job_id=job_id)
    with db.read() as session, pytest.raises(NotFound):
        get_job(session=session, tenant_id=tenant, job_id=job_id)
    with db.read() as session:
        assert list_events(session=session, job_id=job_id, after=0, limit=10) == []
    retried, created = submit(db, tenant)
    assert created and retried != job_id


def test_recorded_events_are_public_json(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=1)
    started = begin(db, job_id, 0)
    with db.write() as session:
        finished = finish_step(session=session, job_id=job_id, index=0, output={"r": 1})
    events = json.loads(json.dumps([*started.events, *finished.events]))
    assert [(e["id"], e["type"], e["job_id"]) for e in events] == [
        (2, "job_started", job_id), (3, "step_started", job_id),
        (4, "step_succeeded", job_id), (5, "job_succeeded", job_id)]
    assert events[-1]["data"]["result"] == {"r": 1}
    # A terminal event names the job's intent and its latency (the metrics count them)
    assert events[-1]["data"]["intent"] == "debug.chain"
    assert events[-1]["data"]["latency_ms"] >= 0
    assert events[2]["data"]["worker"] == events[1]["data"]["worker"]


def test_a_redelivered_step_whose_chain_went_on_is_skipped(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=2)
    begin(db, job_id, 0)
    finish(db, job_id, 0, {"first": True})
    begin(db, job_id, 1)
    assert begin(db, job_id, 0).verdict == StepVerdict.skip


def test_deliberate_retries_do_not_count_towards_poison(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    for retry in range(4):
        start = begin(db, job_id, 0, max_deliveries=1, retries=retry)
        assert start.verdict == StepVerdict.run
        with db.write() as session:
            retry_step(session=session, job_id=job_id, index=0, reason="breaker open")
    assert begin(db, job_id, 0, max_deliveries=1, retries=3).verdict == StepVerdict.skip


def quiet(db: Database, older_than: float) -> list[str]:
    with db.read() as session:
        return quiet_jobs(session=session, older_than=older_than, limit=10)


def resume(db: Database, job_id: str, quiet_for: float) -> Handoff:
    with db.write() as session:
        return recovery.resume(session=session, job_id=job_id, quiet_for=quiet_for)


def test_only_unfinished_jobs_without_recent_events_are_quiet(db: Database, tenant: str) -> None:
    waiting, _ = submit(db, tenant, key="waiting")
    ended, _ = submit(db, tenant, steps=1, key="ended")
    begin(db, ended, 0)
    finish(db, ended, 0, "done")
    time.sleep(0.2)
    submit(db, tenant, key="moving")
    assert quiet(db, older_than=0.1) == [waiting]
    assert quiet(db, older_than=60) == []


def test_a_resumed_job_goes_on_from_its_first_unfinished_step(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=3)
    begin(db, job_id, 0)
    finish(db, job_id, 0, "first")
    time.sleep(0.2)
    taken = resume(db, job_id, quiet_for=0.1)
    assert taken.send is not None and taken.send.index == 1
    assert [e["type"] for e in taken.events] == ["job_requeued"]
    assert taken.events[0]["data"]["index"] == 1


def test_a_job_that_moved_on_or_ended_is_not_resumed(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=1)
    assert resume(db, job_id, quiet_for=60).send is None
    time.sleep(0.2)
    assert resume(db, job_id, quiet_for=0.1).send is not None
    assert resume(db, job_id, quiet_for=0.1).send is None, "a second sweeper must not take it"
    begin(db, job_id, 0)
    finish(db, job_id, 0, "done")
    time.sleep(0.2)
    assert resume(db, job_id, quiet_for=0.1).send is None


def test_a_retried_job_goes_on_from_its_failed_step(db: Database, tenant: str) -> None:
    # Given a job whose first step succeeded and whose second failed after two deliveries
    job_id, _ = submit(db, tenant, steps=3, key="retry")
    begin(db, job_id, 0)
    finish(db, job_id, 0, {"first": True})
    begin(db, job_id, 1, max_deliveries=2)
    begin(db, job_id, 1, max_deliveries=2)
    with db.write() as session:
        fail_step(session=session, job_id=job_id, index=1, error="boom")
    # When it is retried
    with db.write() as session:
        handoff = retry_job(session=session, tenant_id=tenant, job_id=job_id)
    # Then the failed step is sent again, the first keeps its output, the job is queued
    assert handoff.send is not None and handoff.send.index == 1
    assert [e["type"] for e in handoff.events] == ["job_retried"]
    with db.read() as session:
        steps = job_steps(session=session, job_id=job_id)
        job = get_job(session=session, tenant_id=tenant, job_id=job_id)
    assert [(s.status, s.output) for s in steps] == [
        (StepStatus.succeeded, {"first": True}), (StepStatus.pending, None),
        (StepStatus.pending, None)]
    assert job.status == JobStatus.queued and job.error is None and job.finished_at is None
    # And its attempts go on, but the poison limit counts from the retry
    start = begin(db, job_id, 1, max_deliveries=2)
    assert start.verdict == StepVerdict.run
    with db.read() as session:
        assert job_steps(session=session, job_id=job_id)[1].attempts == 3


def test_only_a_failed_or_cancelled_job_of_the_tenant_is_retried(db: Database,
                                                                 tenant: str) -> None:
    job_id, _ = submit(db, tenant, steps=1, key="not-failed")
    with db.write() as session, pytest.raises(Conflict, match="only a failed or cancelled"):
        retry_job(session=session, tenant_id=tenant, job_id=job_id)
    with db.write() as session, pytest.raises(NotFound):
        retry_job(session=session, tenant_id="ten_other", job_id=job_id)
