"""The callback outbox: written with the terminal status, claimed once, retried on schedule."""

import json
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest

from core import deliveries
from core.db import Database
from core.deliveries import AttemptResult
from core.errors import Conflict
from core.models import Delivery, DeliveryStatus, Job, Tenant, utcnow
from core.settings import Settings
from core.store.events import append_many
from core.store.ledger import begin_step, fail_step, finish_step
from core.store.queries import cancel_job, list_events
from core.store.submission import submit_job
from core.store.tables import NewStep, new_job_id
from tasks import callbacks as callback_tasks
from tests.unit.keys import VAULT

SCHEDULE = [1.0, 2.0]
FAILED = AttemptResult(ok=False, gone=False, status_code=500, latency_ms=3, error="answered 500",
                       retry_after=None)
OK = AttemptResult(ok=True, gone=False, status_code=200, latency_ms=3, error=None,
                   retry_after=None)



def job_with_callback(db: Database, tenant: str, url: str | None = "https://example.com/h") -> str:
    with db.write() as session:
        job, _, _ = submit_job(
            session=session, job_id=new_job_id(), tenant_id=tenant, intent="debug.echo",
            mode="agent", inputs={}, context={}, callback_url=url,
            steps=[NewStep("debug.echo", "tools", {})],
            idempotency_key=new_job_id(), window=3600)
        return job.id


def run_to_end(db: Database, job_id: str, output: object = {"ok": 1}) -> list[dict]:
    with db.write() as session:
        begin_step(session=session, job_id=job_id, index=0, runner="h:1", max_deliveries=3)
    with db.write() as session:
        return finish_step(session=session, job_id=job_id, index=0, output=output).events


def the_delivery(db: Database, job_id: str) -> Delivery:
    with db.read() as session:
        rows = deliveries.list_deliveries(session=session, tenant_id=_tenant_of(db, job_id),
                                          job_id=job_id, status=None, limit=10)
    assert len(rows) == 1
    return rows[0]


def _tenant_of(db: Database, job_id: str) -> str:
    with db.read() as session:
        return session.get_one(Job, job_id).tenant_id


def test_a_finished_job_with_a_callback_writes_one_delivery(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    events = run_to_end(db, job_id)
    assert [e["type"] for e in events] == ["step_succeeded", "job_succeeded",
                                           "callback_scheduled"]
    delivery = the_delivery(db, job_id)
    assert events[-1]["data"]["delivery_id"] == delivery.id
    body = json.loads(delivery.body)
    assert body["type"] == "job.succeeded"
    assert body["data"]["result"] == {"ok": 1} and body["data"]["job_id"] == job_id
    assert body["data"]["links"]["self"] == f"/v1/jobs/{job_id}"


def test_failed_and_cancelled_jobs_get_callbacks_too(db: Database, tenant: str) -> None:
    failed = job_with_callback(db, tenant)
    with db.write() as session:
        fail_step(session=session, job_id=failed, index=0, error="E: no")
    cancelled = job_with_callback(db, tenant)
    with db.write() as session:
        cancel_job(session=session, tenant_id=tenant, job_id=cancelled)
    assert json.loads(the_delivery(db, failed).body)["data"]["error"].endswith("E: no")
    assert json.loads(the_delivery(db, cancelled).body)["type"] == "job.cancelled"


def test_no_callback_url_no_delivery(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant, url=None)
    assert "callback_scheduled" not in [e["type"] for e in run_to_end(db, job_id)]


def claim(db: Database, limit: int = 100, lease: float = 30) -> list[str]:
    with db.write() as session:
        return [c.id for c in deliveries.claim_due(session=session, limit=limit,
                                                   lease_seconds=lease)]


def test_a_delivery_is_claimed_once(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    run_to_end(db, job_id)
    delivery_id = the_delivery(db, job_id).id
    assert claim(db) == [delivery_id]
    assert claim(db) == []


def test_claims_take_the_longest_due_first_up_to_the_limit(db: Database, tenant: str) -> None:
    ids = []
    for _ in range(5):
        job_id = job_with_callback(db, tenant)
        run_to_end(db, job_id)
        ids.append(the_delivery(db, job_id).id)
    with db.write() as session:  # the third is not due yet (a retry's wait)
        later = session.get_one(Delivery, ids[2])
        later.next_attempt_at = later.next_attempt_at + timedelta(hours=1)
        session.add(later)
    assert claim(db, limit=2) == ids[:2]
    assert claim(db, limit=10) == [ids[3], ids[4]]
    assert claim(db) == []
    with db.read() as session:
        assert {session.get_one(Delivery, i).attempts for i in ids} == {0, 1}


def attempt(db: Database, delivery_id: str, result: AttemptResult) -> str:
    with db.write() as session:
        delivery = session.get_one(Delivery, delivery_id)
        delivery.next_attempt_at = delivery.created_at
        session.add(delivery)
    assert claim(db) == [delivery_id]
    with db.write() as session:
        [recorded] = deliveries.record_many(session=session, results=[(delivery_id, result)],
                                            schedule_seconds=SCHEDULE)
    return recorded.kind


def test_failures_follow_the_schedule_then_the_delivery_is_dead(db: Database,
                                                                tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    run_to_end(db, job_id)
    delivery_id = the_delivery(db, job_id).id
    kinds = [attempt(db, delivery_id, FAILED) for _ in range(3)]
    assert kinds == ["callback_failed", "callback_failed", "callback_dead"]
    with db.read() as session:
        log = deliveries.attempts(session=session, delivery_id=delivery_id)
    assert [a.number for a in log] == [1, 2, 3]
    assert the_delivery(db, job_id).status == DeliveryStatus.dead


def test_retry_after_longer_than_the_schedule_is_honoured(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    run_to_end(db, job_id)
    delivery_id = the_delivery(db, job_id).id
    assert claim(db) == [delivery_id]
    slow = AttemptResult(ok=False, gone=False, status_code=429, latency_ms=1, error="429",
                         retry_after=600)
    with db.write() as session:
        deliveries.record_many(session=session, results=[(delivery_id, slow)],
                               schedule_seconds=SCHEDULE)
    with db.read() as session:
        stored = session.get_one(Delivery, delivery_id)
        assert stored.next_attempt_at is not None and stored.last_status_code == 429
        wait = stored.next_attempt_at - stored.created_at
        assert wait > timedelta(seconds=590)


def test_410_stops_retrying(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    run_to_end(db, job_id)
    gone = AttemptResult(ok=False, gone=True, status_code=410, latency_ms=1, error="410",
                         retry_after=None)
    assert attempt(db, the_delivery(db, job_id).id, gone) == "callback_dead"


def test_redeliver_reuses_the_id_after_the_end(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    run_to_end(db, job_id)
    delivery_id = the_delivery(db, job_id).id
    with db.write() as session, pytest.raises(Conflict):
        deliveries.redeliver(session=session, tenant_id=tenant, delivery_id=delivery_id)
    attempt(db, delivery_id, OK)
    with db.write() as session:
        again = deliveries.redeliver(session=session, tenant_id=tenant, delivery_id=delivery_id)
    assert again.id == delivery_id and again.status == DeliveryStatus.pending
    with db.write() as session:
        assert deliveries.due(session=session, limit=10) == [delivery_id]


def test_a_lost_attempts_lease_expires_and_it_is_due_again(db: Database, tenant: str) -> None:
    job_id = job_with_callback(db, tenant)
    run_to_end(db, job_id)
    delivery_id = the_delivery(db, job_id).id
    assert claim(db, lease=-1) == [delivery_id]
    with db.write() as session:
        assert deliveries.due(session=session, limit=10) == [delivery_id]


def test_rotation_signs_with_both_secrets(db: Database, tenant: str) -> None:
    with db.write() as session:
        first = deliveries.signing_secrets(session=session, tenant_id=tenant, vault=VAULT)
        deliveries.rotate_secret(session=session, tenant_id=tenant, vault=VAULT,
                                 overlap=timedelta(hours=24))
        both = deliveries.signing_secrets(session=session, tenant_id=tenant, vault=VAULT)
    assert len(first) == 1 and first[0].startswith("whsec_")
    assert len(both) == 2 and both[1] == first[0] and both[0].startswith("whsec_")
    assert both[0] != first[0]
    # And neither is stored in the clear
    with db.read() as session:
        row = session.get_one(Tenant, tenant)
    assert "whsec_" not in f"{row.webhook_secret} {row.previous_webhook_secret}"


def test_the_previous_secret_stops_signing_when_the_overlap_ends(db: Database,
                                                                tenant: str) -> None:
    # Given a rotation whose overlap (CALLBACK_SECRET_OVERLAP) is 0.3 s
    with db.write() as session:
        [old] = deliveries.signing_secrets(session=session, tenant_id=tenant, vault=VAULT)
        deliveries.rotate_secret(session=session, tenant_id=tenant, vault=VAULT,
                                 overlap=timedelta(seconds=0.3))
        [new, previous] = deliveries.signing_secrets(session=session, tenant_id=tenant,
                                                     vault=VAULT)
    assert previous == old
    time.sleep(0.4)
    # Then once it has passed, only the new secret signs
    with db.read() as session:
        assert deliveries.signing_secrets(session=session, tenant_id=tenant,
                                          vault=VAULT) == [new]


def test_a_step_ending_after_cancel_adds_no_second_callback(db: Database, tenant: str) -> None:
    # Given a job with a callback cancelled while its step runs
    job_id = job_with_callback(db, tenant)
    with db.write() as session:
        begin_step(session=session, job_id=job_id, index=0, runner="h:1", max_deliveries=3)
    with db.write() as session:
        cancel_job(session=session, tenant_id=tenant, job_id=job_id)
    # When the step then finishes, or fails
    with db.write() as session:
        finished = finish_step(session=session, job_id=job_id, index=0, output=1).events
    with db.write() as session:
        failed = fail_step(session=session, job_id=job_id, index=0, error="late").events
    # Then the cancel's callback is the only one, and the cancelled step stays cancelled
    assert [*finished, *failed] == []
    assert json.loads(the_delivery(db, job_id).body)["type"] == "job.cancelled"


def test_any_exception_in_an_attempt_is_a_failed_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an attempt whose breaker (or anything around the request) raises something unforeseen
    class Broken:
        def send(self, *_: object) -> None:
            raise RuntimeError("the breaker's store went away")

    runtime = SimpleNamespace(settings=Settings(), callbacks=Broken())
    # When the attempt is made
    delivery = deliveries.Claimed(id="msg_1", job_id="job_1", tenant_id="ten_a",
                                  url="https://hooks.example.com/x", body="{}", attempts=1)
    result = callback_tasks._attempt(runtime, delivery, ["whsec_" + "A" * 44])
    # Then it is a failed attempt the schedule counts, not an exception
    assert (result.ok, result.gone, result.status_code) == (False, False, None)
    assert result.error == "attempt failed: RuntimeError"


def test_a_batch_of_attempts_is_recorded_together_each_with_its_own_outcome(
        db: Database, tenant: str) -> None:
    # Given three jobs' deliveries claimed at once, the first job with a second delivery too
    job_ids = [job_with_callback(db, tenant) for _ in range(3)]
    for job_id in job_ids:
        run_to_end(db, job_id)
    with db.write() as session:
        extra = deliveries.schedule(session=session, outcome=deliveries.Outcome(
            job_id=job_ids[0], tenant_id=tenant, callback_url="https://example.com/h",
            status="succeeded", intent="debug.echo", mode="agent", result=None, error=None,
            created_at=utcnow(), started_at=None, finished_at=utcnow()))
    ids = [the_delivery(db, job_id).id for job_id in job_ids[1:]]
    with db.read() as session:
        first = [d.id for d in deliveries.list_deliveries(
            session=session, tenant_id=tenant, job_id=job_ids[0], status=None, limit=10)]
    assert len(claim(db)) == 4
    gone = AttemptResult(ok=False, gone=True, status_code=410, latency_ms=1, error="410",
                         retry_after=None)
    results = [(first[0], OK), (first[1], FAILED), (ids[0], gone), (ids[1], OK)]
    # When their outcomes are recorded in one transaction, with an event each
    with db.write() as session:
        recorded = deliveries.record_many(session=session, results=results,
                                          schedule_seconds=SCHEDULE)
        events = append_many(session=session, items=[
            (r.job_id, [(r.kind, {"delivery_id": r.delivery_id})]) for r in recorded])
    # Then each delivery has its own outcome and logged attempt
    kinds = {r.delivery_id: r.kind for r in recorded}
    assert [kinds[d] for d, _ in results] == ["callback_succeeded", "callback_failed",
                                              "callback_dead", "callback_succeeded"]
    with db.read() as session:
        stored = {d: session.get_one(Delivery, d) for d, _ in results}
        logged = {d: deliveries.attempts(session=session, delivery_id=d) for d, _ in results}
        first_log = list_events(session=session, job_id=job_ids[0], after=0, limit=100)
    assert [stored[d].status for d, _ in results] == ["succeeded", "pending", "dead", "succeeded"]
    assert stored[first[1]].next_attempt_at is not None and stored[first[0]].finished_at
    assert all(stored[d].lease_until is None for d, _ in results)
    assert {d: [(a.number, a.status_code) for a in log] for d, log in logged.items()} == {
        first[0]: [(1, 200)], first[1]: [(1, 500)], ids[0]: [(1, 410)], ids[1]: [(1, 200)]}
    # And each job's log goes on numbering without a gap, its two events in order
    seqs = [e.seq for e in first_log]
    assert seqs == list(range(1, len(seqs) + 1))
    with db.read() as session:
        assert session.get_one(Job, job_ids[0]).event_seq == seqs[-1]
    assert [e.data.get("delivery_id") for e in first_log[-2:]] == first
    assert sorted(e["job_id"] for e in events) == sorted([job_ids[0]] * 2 + job_ids[1:])
    assert extra in first
