"""Concurrency rules, throttling in the ledger and budget refusals, on a real SQLite store."""

from typing import Any

import pytest

from core.db import Database
from core.models import StepStatus
from core.store.ledger import StepVerdict, begin_step, finish_step
from core.store.limits import (
    Budget,
    budget_refusal,
    concurrency_rule,
    set_concurrency_limit,
    set_tenant_budget,
)
from core.store.queries import job_steps
from core.store.tables import NewStep
from tests.unit.test_store import submit

DEFAULTS = {"*": 50, "ssh.*": 10, "ssh.exec": 5}


@pytest.mark.parametrize(("intent", "own", "expected"), [
    ("ssh.exec", {}, ("ssh.exec", 5)),
    ("ssh.exec.peek", {}, ("ssh.*", 10)),
    ("memory.write", {}, ("*", 50)),
    ("ssh.exec", {"ssh.exec": 2}, ("ssh.exec", 2)),
    ("agent.x", {"agent.*": 1}, ("agent.*", 1)),
], ids=["exact-wins", "longer-glob", "catch-all", "tenant-replaces", "tenant-adds"])
def test_the_most_specific_rule_decides(db: Database, tenant: str, intent: str,
                                        own: dict[str, int], expected: tuple[str, int]) -> None:
    with db.write() as session:
        for pattern, most in own.items():
            set_concurrency_limit(session=session, tenant_id=tenant, pattern=pattern,
                                  max_running=most)
    with db.read() as session:
        rule = concurrency_rule(session=session, tenant_id=tenant, intent=intent,
                                defaults=DEFAULTS)
    assert rule is not None and (rule.pattern, rule.max_running) == expected
    assert rule.key == f"{tenant}:{expected[0]}"


def test_no_rule_means_unlimited(db: Database, tenant: str) -> None:
    with db.read() as session:
        assert concurrency_rule(session=session, tenant_id=tenant, intent="x",
                                defaults={"ssh.*": 1}) is None


def test_a_throttled_step_stays_pending_and_is_not_counted_as_a_delivery(
        db: Database, tenant: str) -> None:
    # Given a step the admission throttles
    job_id, _ = submit(db, tenant, steps=1)
    full: dict[str, Any] = {"intent": "debug.chain.link", "limit": "debug.*",
                            "max_running": 1, "running": 1}
    with db.write() as session:
        start = begin_step(session=session, job_id=job_id, index=0, runner="h:1",
                           max_deliveries=1, admit=lambda _s, _at: full)
    # Then it is skipped, said in a step_throttled event, pending with no attempt
    assert start.verdict == StepVerdict.skip
    assert [(e["type"], e["data"]) for e in start.events] == [
        ("step_throttled", {"index": 0, **full})]
    # And once admitted it starts as its first delivery, however often it was throttled
    with db.write() as session:
        begin_step(session=session, job_id=job_id, index=0, runner="h:1", max_deliveries=1,
                   admit=lambda _s, _at: full)
        start = begin_step(session=session, job_id=job_id, index=0, runner="h:1",
                           max_deliveries=1, admit=lambda _s, _at: None)
    assert start.verdict == StepVerdict.run
    with db.read() as session:
        step = job_steps(session=session, job_id=job_id)[0]
    assert (step.status, step.attempts) == (StepStatus.running, 1)


def spend(db: Database, tenant: str, tokens: int, cost: float) -> None:
    job_id, _ = submit(db, tenant, key=f"k{tokens}{cost}", plan=[NewStep("llm.plan", "llm")])
    with db.write() as session:
        begin_step(session=session, job_id=job_id, index=0, runner="h:1", max_deliveries=1)
        finish_step(session=session, job_id=job_id, index=0, output={"usage": {
            "prompt_tokens": tokens, "completion_tokens": 0, "cost": cost, "calls": 1}})


def test_a_spent_budget_is_refused_saying_how_much_of_what(db: Database, tenant: str) -> None:
    # Given 12.40 USD and 900 tokens used this month
    spend(db, tenant, 900, 12.4)
    with db.read() as session:
        # Then the settings' 12 USD a month are exhausted, and the message says so
        assert budget_refusal(session=session, tenant_id=tenant, default=Budget(
            month_usd=12.0)) == "tenant budget exhausted: 12.40 of 12.00 USD this month"
        # And a day's 1000 tokens are exhausted once a step's pending 100 count
        day = Budget(day_tokens=1000)
        assert budget_refusal(session=session, tenant_id=tenant, default=day) is None
        assert budget_refusal(session=session, tenant_id=tenant, default=day,
                              pending=(100, 0.0)) == (
            "tenant budget exhausted: 1000 of 1000 tokens today")
    # And a tenant's own budget replaces the settings'
    with db.write() as session:
        set_tenant_budget(session=session, tenant_id=tenant, budget=Budget(month_usd=20.0))
    with db.read() as session:
        assert budget_refusal(session=session, tenant_id=tenant,
                              default=Budget(month_usd=12.0)) is None
