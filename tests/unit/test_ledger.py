"""The ledger's engine: plans that grow, references, runners, held and waiting steps."""

import time
from datetime import timedelta

import pytest

from core.db import Database
from core.errors import Conflict, Forbidden, NotFound
from core.models import JobStatus, JobStep, StepStatus
from core.settings import Settings
from core.store.ledger import StepVerdict, begin_step, finish_step, retry_step
from core.store.queries import cancel_job, job_steps, list_events, list_jobs, pending_action
from core.store.recovery import Orphan, expired_steps, requeue_held, requeue_orphan, running_steps
from core.store.tables import Handoff, NewStep, new_token
from core.store.waits import (
    approve_step,
    expire_step,
    hold_step,
    issue_resume_token,
    reject_step,
    resume_step,
    wait_step,
)
from tests.unit.keys import VAULT
from tests.unit.test_store import begin, finish, load, submit


def echo(**inputs: object) -> NewStep:
    return NewStep("debug.echo", "tools", dict(inputs))


def test_a_step_grows_the_plan_and_the_job_goes_on_with_the_new_steps(
        db: Database, tenant: str) -> None:
    # Given a job whose only step is a planner
    job_id, _ = submit(db, tenant, plan=[NewStep("debug.plan", "llm", {})])
    begin(db, job_id, 0)
    # When it succeeds adding two steps
    with db.write() as session:
        handoff = finish_step(session=session, job_id=job_id, index=0,
                                    output={"planned": 2}, extend=[echo(a=1), echo(b=2)])
    # Then they are in the ledger after it, the first is sent next, and the job is not over
    assert [e["type"] for e in handoff.events] == ["step_succeeded", "plan_extended"]
    assert handoff.send is not None and (handoff.send.index, handoff.send.pool) == (1, "tools")
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.running and job.progress == pytest.approx(1 / 3, abs=1e-3)
    assert [(s.index, s.intent, s.status) for s in steps] == [
        (0, "debug.plan", StepStatus.succeeded), (1, "debug.echo", StepStatus.pending),
        (2, "debug.echo", StepStatus.pending)]
    # And the job ends with the last added step, decided from the rows
    begin(db, job_id, 1)
    assert finish(db, job_id, 1, "one") == ["step_succeeded"]
    begin(db, job_id, 2)
    assert finish(db, job_id, 2, "two") == ["step_succeeded", "job_succeeded"]
    assert load(db, tenant, job_id)[0].result == "two"


def test_a_plan_that_grows_past_the_limit_fails_its_step(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, plan=[NewStep("debug.plan", "llm", {})])
    begin(db, job_id, 0)
    events = finish(db, job_id, 0, {}, extend=[echo(i=i) for i in range(5)], max_steps=5)
    assert events == ["step_failed", "job_failed"]
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.failed and "grow to 6 steps" in (job.error or "")
    assert len(steps) == 1


@pytest.mark.parametrize(("added", "ends"), [(4, "step_succeeded"), (5, "step_failed")],
                         ids=["exactly-the-limit", "one-more"])
def test_a_plan_may_grow_to_exactly_the_limit_and_no_further(
        db: Database, tenant: str, added: int, ends: str) -> None:
    # Given a planner, step 0 of 5 allowed (ORCHESTRATOR_MAX_STEPS)
    job_id, _ = submit(db, tenant, plan=[NewStep("debug.plan", "llm", {})])
    begin(db, job_id, 0)
    # When it adds 4 steps (5 in all) or 5 (6 in all)
    events = finish(db, job_id, 0, {}, extend=[echo(i=i) for i in range(added)], max_steps=5)
    # Then the plan of exactly 5 goes on, and the one of 6 fails
    assert events[0] == ends
    assert len(load(db, tenant, job_id)[1]) == (5 if added == 4 else 1)


def test_a_job_with_no_steps_ends_at_once(db: Database, tenant: str) -> None:
    job_id, created = submit(db, tenant, plan=[])
    job, steps = load(db, tenant, job_id)
    assert created and job.status == JobStatus.succeeded and steps == []
    assert job.finished_at is not None and job.progress == 1.0


def test_references_are_resolved_from_the_ledger_when_the_step_starts(
        db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, plan=[
        echo(), echo(got={"$ref": "steps.0.output.results"})])
    begin(db, job_id, 0)
    finish(db, job_id, 0, {"results": [1, 2]})
    start = begin(db, job_id, 1)
    assert start.verdict == StepVerdict.run and start.inputs == {"got": [1, 2]}


def test_a_reference_that_does_not_resolve_fails_the_step_naming_the_field(
        db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant, plan=[echo(), echo(got={"$ref": "steps.0.output.nope"})])
    begin(db, job_id, 0)
    finish(db, job_id, 0, {"results": []})
    start = begin(db, job_id, 1)
    assert start.verdict == StepVerdict.skip
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.failed
    assert steps[1].error and steps[1].error.startswith("inputs.got: 'steps.0.output.nope'")


def test_a_step_running_on_a_live_runner_is_not_run_again(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    assert begin(db, job_id, 0, runner="a:1").verdict == StepVerdict.run
    duplicate = begin(db, job_id, 0, runner="b:2", live=frozenset({"a:1"}))
    assert duplicate.verdict == StepVerdict.skip and "running on a:1" in duplicate.reason
    takeover = begin(db, job_id, 0, runner="b:2", live=frozenset())
    assert takeover.verdict == StepVerdict.run
    assert load(db, tenant, job_id)[1][0].attempts == 2


def test_steps_of_a_dead_runner_are_found_and_sent_again_once(db: Database, tenant: str) -> None:
    job_id, _ = submit(db, tenant)
    begin(db, job_id, 0, runner="dead:1")
    time.sleep(0.05)
    with db.read() as session:
        orphans = running_steps(session=session, started_before=0.01, limit=10)
    assert orphans == [Orphan(job_id, 0, "dead:1")]
    with db.write() as session:
        taken = requeue_orphan(session=session, orphan=orphans[0])
    assert taken.send is not None and taken.send.index == 0
    assert [e["type"] for e in taken.events] == ["step_requeued"]
    with db.write() as session:
        assert requeue_orphan(session=session, orphan=orphans[0]).send is None


def test_a_pending_step_a_dead_runner_held_is_sent_again_only_while_pending(
        db: Database, tenant: str) -> None:
    # Given a step whose message a runner received but never started
    job_id, _ = submit(db, tenant)
    # When the sweeper takes it back: it is sent again, saying why
    with db.write() as session:
        taken = requeue_held(session=session, job_id=job_id, index=0, runner="dead:1")
    assert taken.send is not None and taken.send.index == 0
    assert [(e["type"], e["data"]["reason"]) for e in taken.events] == [
        ("step_requeued", "its worker dead:1 stopped before its start was written")]
    # Then once it started (or ended) it is never sent again for that runner
    begin(db, job_id, 0, runner="live:2")
    with db.write() as session:
        assert requeue_held(session=session, job_id=job_id, index=0,
                                  runner="dead:1").send is None


def hold(db: Database, job_id: str, inputs: dict[str, object], ttl: float = 60) -> str:
    token = new_token("apv")
    with db.write() as session:
        hold_step(session=session, job_id=job_id, index=0, inputs=inputs, reason="risky",
                        token=token, ttl=ttl, approve_url="http://x/approve",
                        vault=VAULT)
    return token


def held_job(db: Database, tenant: str, key: str = "k1") -> str:
    job_id, _ = submit(db, tenant, key=key, plan=[NewStep("debug.hold", "tools", {"p": 1})])
    begin(db, job_id, 0)
    return job_id


def approve(db: Database, tenant: str, job_id: str, token: str) -> tuple[Handoff,
                                                                         str | None]:
    with db.write() as session:
        return approve_step(session=session, tenant_id=tenant, job_id=job_id, token=token)


def test_a_held_step_runs_once_approved_with_its_token(db: Database, tenant: str) -> None:
    job_id = held_job(db, tenant)
    token = hold(db, job_id, {"p": 1})
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.awaiting_approval and steps[0].status == StepStatus.held
    assert steps[0].token_hash and token not in steps[0].token_hash
    handoff, refused = approve(db, tenant, job_id, token)
    assert refused is None and handoff.send is not None and handoff.send.index == 0
    start = begin(db, job_id, 0)
    assert start.verdict == StepVerdict.run and start.approved
    with db.write() as session, pytest.raises(Conflict, match="no step awaiting approval"):
        approve_step(session=session, tenant_id=tenant, job_id=job_id, token=token)


def test_a_token_of_another_step_or_a_changed_command_does_not_approve(
        db: Database, tenant: str) -> None:
    first, second = held_job(db, tenant, "a"), held_job(db, tenant, "b")
    hold(db, first, {"p": 1})
    other = hold(db, second, {"p": 1})
    with db.write() as session, pytest.raises(Forbidden, match="another step"):
        approve_step(session=session, tenant_id=tenant, job_id=first, token=other)
    token = hold(db, held_job(db, tenant, "c"), {"p": 1})
    job_id = load_last(db, tenant)
    with db.write() as session:
        step = session.get_one(JobStep, step_id(db, job_id))
        step.inputs = {"p": 2}
        session.add(step)
    with db.write() as session, pytest.raises(Forbidden):
        approve_step(session=session, tenant_id=tenant, job_id=job_id, token=token)
    with db.write() as session, pytest.raises(NotFound):
        approve_step(session=session, tenant_id="other", job_id=job_id, token=token)


def load_last(db: Database, tenant: str) -> str:
    with db.read() as session:
        jobs = list_jobs(session=session, tenant_id=tenant, status=None, intent=None,
                               limit=1, before=None)
        return jobs[0].id


def step_id(db: Database, job_id: str) -> int:
    with db.read() as session:
        step_pk = job_steps(session=session, job_id=job_id)[0].id
        assert step_pk is not None
        return step_pk


def test_an_expired_approval_fails_the_step(db: Database, tenant: str) -> None:
    job_id = held_job(db, tenant)
    token = hold(db, job_id, {"p": 1}, ttl=0.01)
    time.sleep(0.05)
    handoff, refused = approve(db, tenant, job_id, token)
    assert refused and "expired" in refused
    assert [e["type"] for e in handoff.events] == ["step_expired", "step_failed", "job_failed"]
    assert load(db, tenant, job_id)[0].status == JobStatus.failed


def test_a_rejected_step_fails_with_the_reason(db: Database, tenant: str) -> None:
    job_id = held_job(db, tenant)
    hold(db, job_id, {"p": 1})
    with db.write() as session:
        handoff = reject_step(session=session, tenant_id=tenant, job_id=job_id,
                                    reason="too risky")
    assert [e["type"] for e in handoff.events] == ["step_rejected", "step_failed", "job_failed"]
    job, _ = load(db, tenant, job_id)
    assert job.error == "step 0 (debug.hold) failed: rejected: too risky"


def waiting_job(db: Database, tenant: str, ttl: float = 60, early: bool = False) -> tuple[str, str]:
    job_id, _ = submit(db, tenant, plan=[NewStep("debug.wait", "flow", {}), echo()])
    begin(db, job_id, 0)
    token = new_token("rsm")
    with db.write() as session:
        issue_resume_token(session=session, job_id=job_id, index=0, token=token)
    if early:
        resume(db, token, {"early": True})
    with db.write() as session:
        wait_step(session=session, job_id=job_id, index=0, ttl=ttl, reason="flow",
                        resume_url=f"http://x/v1/resume/{token}", vault=VAULT)
    return job_id, token


def resume(db: Database, token: str, output: dict[str, object]) -> tuple[Handoff,
                                                                          str | None]:
    with db.write() as session:
        resumed = resume_step(session=session, token=token, output=output)
        return resumed.handoff, resumed.refused


def test_a_waiting_step_is_resumed_once_by_its_token(db: Database, tenant: str) -> None:
    job_id, token = waiting_job(db, tenant)
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.waiting and steps[0].status == StepStatus.waiting
    handoff, refused = resume(db, token, {"answer": 42})
    assert refused is None and handoff.send is not None and handoff.send.index == 1
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.running and steps[0].output == {"answer": 42}
    with pytest.raises(NotFound, match="used already"):
        resume(db, token, {"answer": 43})


def test_a_resume_that_comes_before_the_step_waits_is_kept(db: Database, tenant: str) -> None:
    job_id, _ = waiting_job(db, tenant, early=True)
    _, steps = load(db, tenant, job_id)
    assert steps[0].status == StepStatus.succeeded and steps[0].output == {"early": True}


def test_a_resume_after_the_deadline_but_before_the_sweep_is_refused(
        db: Database, tenant: str) -> None:
    # Given a waiting step whose deadline passed, not yet expired by the sweeper
    job_id, token = waiting_job(db, tenant, ttl=0.01)
    time.sleep(0.05)
    # When its resume URL is called
    handoff, refused = resume(db, token, {"late": True})
    # Then it is refused (the route answers 409), and the step fails as the sweeper would
    assert refused is not None and "stopped waiting" in refused
    assert [e["type"] for e in handoff.events] == ["step_expired", "step_failed", "job_failed"]
    job, steps = load(db, tenant, job_id)
    assert job.status == JobStatus.failed and steps[0].output is None


def test_a_second_early_resume_is_refused_and_the_first_output_kept(
        db: Database, tenant: str) -> None:
    # Given a running step that issued its resume token, resumed once before it waits
    job_id, _ = submit(db, tenant, plan=[NewStep("debug.wait", "flow", {})])
    begin(db, job_id, 0)
    token = new_token("rsm")
    with db.write() as session:
        issue_resume_token(session=session, job_id=job_id, index=0, token=token)
    assert resume(db, token, {"first": 1})[1] is None
    # When the same token comes again, still early
    with pytest.raises(NotFound, match="used already"):
        resume(db, token, {"second": 2})
    # Then the step ends with the first output once it waits
    with db.write() as session:
        wait_step(session=session, job_id=job_id, index=0, ttl=60, reason="flow",
                  resume_url=f"http://x/v1/resume/{token}", vault=VAULT)
    _, steps = load(db, tenant, job_id)
    assert steps[0].status == StepStatus.succeeded and steps[0].output == {"first": 1}


def test_a_wait_past_its_deadline_is_expired_by_the_sweeper(db: Database, tenant: str) -> None:
    job_id, token = waiting_job(db, tenant, ttl=0.01)
    time.sleep(0.05)
    with db.read() as session:
        assert expired_steps(session=session, limit=10) == [(job_id, 0)]
    with db.write() as session:
        handoff = expire_step(session=session, job_id=job_id, index=0)
    assert [e["type"] for e in handoff.events] == ["step_expired", "step_failed", "job_failed"]
    with pytest.raises(NotFound):
        resume(db, token, {})


def test_cancel_ends_held_and_waiting_steps(db: Database, tenant: str) -> None:
    job_id, token = waiting_job(db, tenant)
    with db.write() as session:
        cancel_job(session=session, tenant_id=tenant, job_id=job_id)
    assert load(db, tenant, job_id)[1][0].status == StepStatus.cancelled
    with pytest.raises(NotFound):
        resume(db, token, {})


def test_pending_action_shows_the_token_of_a_held_step(db: Database, tenant: str) -> None:
    job_id = held_job(db, tenant)
    token = hold(db, job_id, {"p": 1})
    with db.read() as session:
        steps = job_steps(session=session, job_id=job_id)
        pending = pending_action(session=session, steps=steps, vault=VAULT)
    assert pending is not None and pending["token"] == token and pending["status"] == "held"
    assert pending["reason"] == "risky" and pending["inputs"] == {"p": 1}
    assert timedelta(seconds=0) < (steps[0].deadline - steps[0].started_at)  # type: ignore[operator]


def test_held_and_waiting_events_keep_their_tokens_sealed(db: Database, tenant: str) -> None:
    # Given a held step and a waiting step, each with its token in an event
    held = held_job(db, tenant, key="held")
    approval = hold(db, held, {"p": 1})
    waiting, resume_token = waiting_job(db, tenant)
    # When their events are read from the store
    with db.read() as session:
        stored = [e.data for job in (held, waiting)
                  for e in list_events(session=session, job_id=job, after=0, limit=50)]
    # Then neither token is there in the clear, but the job's tenant sees each opened
    assert approval not in str(stored) and resume_token not in str(stored)
    with db.read() as session:
        shown = [pending_action(session=session, vault=VAULT, steps=job_steps(
            session=session, job_id=job)) for job in (held, waiting)]
    assert shown[0] is not None and shown[0]["token"] == approval
    assert shown[1] is not None and shown[1]["resume_url"].endswith(f"/v1/resume/{resume_token}")


def test_breaker_retries_never_count_towards_poison_under_the_production_defaults(
        db: Database, tenant: str) -> None:
    # Given the production defaults for deliveries and upstream retries
    defaults = Settings().orchestrator
    job_id, _ = submit(db, tenant)
    # When a step meets an open breaker on every try, each retry a new message
    for retry in range(defaults.upstream_retries + 1):
        start = begin(db, job_id, 0, max_deliveries=defaults.max_step_deliveries, retries=retry)
        # Then every try runs: none is failed as poison
        assert start.verdict == StepVerdict.run, (retry, start.reason)
        with db.write() as session:
            retry_step(session=session, job_id=job_id, index=0, reason="breaker open")


def test_a_planners_references_are_kept_for_the_steps_it_plans(db: Database,
                                                                tenant: str) -> None:
    plan = {"steps": [{"intent": "debug.echo", "inputs": {"x": {"$ref": "steps.1.output"}}}]}
    job_id, _ = submit(db, tenant, plan=[NewStep("debug.plan", "llm", plan)])
    with db.write() as session:
        start = begin_step(session=session, job_id=job_id, index=0, runner="h:1",
                                 max_deliveries=3, literal=lambda intent, _: intent == "debug.plan")
    assert start.verdict == StepVerdict.run and start.inputs == plan
