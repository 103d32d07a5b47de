"""Concurrency limits at dispatch and model budgets, on real workers, Valkey and both stores."""

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis

from core.store.limits import set_concurrency_limit
from core.store.tenants import tenant_for_key
from tasks.engine import slots
from tests.integration.conftest import LOST_AFTER, Stack, running_stack, wait_job


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack of this module's own (Redis databases 11 and 12)."""
    db_index = 11 if request.param == "sqlite" else 12
    with running_stack(request, request.param, db_index, {}, name=f"limits_{request.param}",
                       split_workers=False, concurrency=20) as running:
        yield running


def tenant_of(stack: Stack, key: str) -> str:
    with stack.db.read() as session:
        tenant = tenant_for_key(session=session, raw_key=key)
    assert tenant is not None
    return tenant


def limit(stack: Stack, key: str, pattern: str, most: int) -> str:
    """Give the key's tenant a concurrency limit in the store (what the CLI does)."""
    tenant = tenant_of(stack, key)
    with stack.db.write() as session:
        set_concurrency_limit(session=session, tenant_id=tenant, pattern=pattern,
                              max_running=most)
    return tenant


def sleeps(client: httpx.Client, count: int, seconds: float) -> list[str]:
    return [client.post("/v1/jobs", json={"intent": "debug.sleep", "inputs": {
        "seconds": seconds + n / 1000}}).json()["job_id"] for n in range(count)]


def most_at_once(jobs: list[dict[str, Any]]) -> int:
    """The most steps running at one moment, from the ledger's start and finish times."""
    edges: list[tuple[datetime, int]] = []
    for job in jobs:
        for step in job["steps"]:
            edges += [(datetime.fromisoformat(step["started_at"]), 1),
                      (datetime.fromisoformat(step["finished_at"]), -1)]
    running = most = 0
    for _, change in sorted(edges):  # a finish before a start at the same instant
        running += change
        most = max(most, running)
    return most


def test_a_limit_of_two_runs_ten_jobs_two_at_a_time_and_spares_other_tenants(
        stack: Stack) -> None:
    # Given a tenant limited to 2 running debug.sleep steps, and another without a limit
    key, other_key = stack.new_key(), stack.new_key()
    limit(stack, key, "debug.*", 2)
    with stack.client(key) as limited, stack.client(other_key) as free:
        # When the first submits 10 jobs and the other 4 at the same time
        ids = sleeps(limited, 10, 0.4)
        other_ids = sleeps(free, 4, 1.5)
        others = [wait_job(free, job_id, timeout=60) for job_id in other_ids]
        jobs = [wait_job(limited, job_id, timeout=90) for job_id in ids]
        events = limited.get(f"/v1/jobs/{ids[-1]}/events").json()
    # Then all succeed, never more than 2 of the limited tenant's at once, and it was said
    assert {j["status"] for j in [*jobs, *others]} == {"succeeded"}
    assert most_at_once(jobs) == 2
    throttled = [e["data"] for e in events if e["type"] == "step_throttled"]
    assert throttled and throttled[0]["limit"] == "debug.*"
    assert throttled[0]["max_running"] == 2
    # And the other tenant's jobs ran side by side, not queued behind the limit
    assert most_at_once(others) >= 3
    # And no step of a throttled job counts a throttle as a delivery
    assert all(j["steps"][0]["attempts"] == 1 for j in jobs)
    assert "orchestrator_concurrency_slots_in_use" in stack.metrics()


def test_a_killed_workers_slot_is_freed_after_worker_lost_after(stack: Stack) -> None:
    # Given a tenant limited to 1 running step, holding it with a long step
    key = stack.new_key()
    tenant = limit(stack, key, "debug.sleep", 1)
    with stack.client(key) as client:
        first = sleeps(client, 1, 20)[0]
        wait_started(client, first)
        second = sleeps(client, 1, 0.1)[0]
        wait_event(client, second, "step_throttled")
        # When the worker holding the slot is SIGKILLed (and the job it ran is cancelled, so
        # nothing but the sweeper's reclaim can free that slot)
        killed_at = time.monotonic()
        replace_worker(stack)
        client.post(f"/v1/jobs/{first}/cancel")
        # Then after WORKER_LOST_AFTER its slot is freed: the waiting job runs and succeeds
        job = wait_job(client, second, timeout=LOST_AFTER + 60)
        assert job["status"] == "succeeded"
        assert time.monotonic() - killed_at > LOST_AFTER - 1
    assert wait_job(stack.client(key), first)["status"] == "cancelled"
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    wait_until(lambda: not slots.holders(broker, f"{tenant}:debug.sleep"), "slots held")
    stack.wait_ready()


def replace_worker(stack: Stack) -> None:
    worker = stack.workers["all"]
    worker.kill(signal.SIGKILL)
    worker.stop()
    stack.start_worker("all", ["llm", "tools", "flow", "callbacks", "memory"], concurrency=20)


def wait_until(done: Any, what: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_started(client: httpx.Client, job_id: str) -> None:
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["steps"][0]["status"]
               == "running", job_id)


def wait_event(client: httpx.Client, job_id: str, kind: str) -> None:
    wait_until(lambda: any(e["type"] == kind for e in client.get(
        f"/v1/jobs/{job_id}/events").json()), (job_id, kind))
