"""Concurrency limits at dispatch and model budgets, on real workers, Valkey and both stores."""

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from core.store.limits import Budget, set_concurrency_limit, set_tenant_budget
from core.store.tables import NextStep
from core.store.tenants import tenant_for_key
from tasks.engine import slots
from tasks.engine.chain import send_step
from tests import services
from tests.integration.conftest import LOST_AFTER, Stack, running_stack, wait_job
from tests.integration.llm_server import Script, scripted_llm


@pytest.fixture(scope="module")
def llm_server() -> Iterator[tuple[str, Script]]:
    with scripted_llm() as (server, script):
        yield server.url, script


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, llm_server: tuple[str, Script]) -> Iterator[Stack]:
    """A stack of this module's own (Redis databases 11 and 12) whose model is the scripted
    server: each call 100 prompt and 20 completion tokens, priced 1.40 USD."""
    env = {"LLM_BASE_URL": f"{llm_server[0]}/v1", "LLM_API_KEY": "test-key",
           "LLM_MODEL": "scripted", "LLM_CONTEXT_TOKENS": "4096",
           "LLM_PRICES": '{"scripted": {"prompt": 10000, "completion": 20000}}'}
    db_index = 11 if request.param == "sqlite" else 12
    with running_stack(request, request.param, db_index, env, name=f"limits_{request.param}",
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
        ids = sleeps(limited, 10, 1.0)
        other_ids = sleeps(free, 4, 1.5)
        others = [wait_job(free, job_id, timeout=60) for job_id in other_ids]
        jobs = [wait_job(limited, job_id, timeout=90) for job_id in ids]
        events = [e for job_id in ids for e in limited.get(f"/v1/jobs/{job_id}/events").json()]
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


def test_a_duplicate_delivery_of_a_step_holding_a_slot_neither_takes_nor_frees_one(
        stack: Stack) -> None:
    # Given a tenant limited to 2 running debug.sleep steps, one of them running
    key = stack.new_key()
    tenant = limit(stack, key, "debug.sleep", 2)
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    with stack.client(key) as client:
        first = sleeps(client, 1, 4)[0]
        wait_started(client, first)
        # When its message is delivered again while it runs, and the worker skips it
        log = stack.logs / "all.log"
        seen = log.read_text().count(f"{first}-0") if log.exists() else 0
        send_step(celery_app_for(stack), NextStep(first, 0, "debug.sleep", "tools"))
        wait_until(lambda: log.read_text().count(f"{first}-0") > seen, "the duplicate's log")
        # Then the step still holds its one slot: one more job runs beside it, the next waits
        second, third = sleeps(client, 2, 1.5)
        wait_event(client, third, "step_throttled")
        assert set(slots.holders(broker, f"{tenant}:debug.sleep")) == {f"{first}-0",
                                                                       f"{second}-0"}
        jobs = [wait_job(client, job_id, timeout=60) for job_id in (first, second, third)]
    assert {j["status"] for j in jobs} == {"succeeded"} and most_at_once(jobs) == 2
    assert jobs[0]["steps"][0]["attempts"] == 1


def test_a_cancelled_waiting_step_leaves_its_limits_queue(stack: Stack) -> None:
    # Given a tenant limited to 1 running debug.sleep step, one running and one waiting
    key = stack.new_key()
    tenant = limit(stack, key, "debug.sleep", 1)
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    with stack.client(key) as client:
        jobs = sleeps(client, 2, 2)
        # (either may be first to the worker: the one throttled waits)
        wait_until(lambda: any(has_event(client, job, "step_throttled") for job in jobs),
                   "a throttled step")
        waiting = next(job for job in jobs if has_event(client, job, "step_throttled"))
        running = next(job for job in jobs if job != waiting)
        assert slots.in_use(broker, f"{tenant}:debug.sleep") == (1, 1)
        # When the waiting job is cancelled
        client.post(f"/v1/jobs/{waiting}/cancel")
        # Then its step is gone from the queue (it can take no one's turn), the other runs on
        assert slots.in_use(broker, f"{tenant}:debug.sleep") == (1, 0)
        assert wait_job(client, waiting)["status"] == "cancelled"
        assert wait_job(client, running)["status"] == "succeeded"


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


def test_a_tenant_over_its_monthly_budget_is_refused_prompts_but_not_other_intents(
        stack: Stack, llm_server: tuple[str, Script]) -> None:
    # Given a tenant whose monthly budget is 1.00 USD, and a model call costing 1.40
    llm_server[1].set()
    key = stack.new_key()
    tenant = tenant_of(stack, key)
    with stack.db.write() as session:
        set_tenant_budget(session=session, tenant_id=tenant, budget=Budget(month_usd=1.0))
    with stack.client(key) as client:
        # When its first prompt plans with the model (within the budget when it started)
        first = wait_job(client, client.post("/v1/jobs", json={"prompt": "hello"}).json()[
            "job_id"])
        # Then the answer, due after the plan spent the budget, says so plainly, with no call
        assert first["status"] == "succeeded"
        spent = "tenant budget exhausted: 1.40 of 1.00 USD this month"
        assert spent in first["result"]["response"]
        assert llm_server[1].served == {"plans": 1, "answers": 0}
        # And its next prompt and chat message are refused with 402 and that message
        refused = client.post("/v1/jobs", json={"prompt": "hello again"})
        assert (refused.status_code, refused.json()) == (402, {"error": spent})
        assert client.post("/v1/chat", json={"prompt": "hi"}).status_code == 402
        # But an intent that calls no model still runs
        echo = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"a": 1}})
        assert echo.status_code == 202
        assert wait_job(client, echo.json()["job_id"])["status"] == "succeeded"
        # And /v1/usage sums what the jobs recorded, with the jobs per intent
        usage = client.get("/v1/usage", params={"period": "month"}).json()
        day = client.get("/v1/usage", params={"period": "day"}).json()
    assert first["usage"]["total_tokens"] == usage["total_tokens"] == 120
    assert first["usage"]["cost"] == pytest.approx(usage["cost"]) == pytest.approx(1.4)
    assert usage["jobs"] == {"llm.plan": 1, "debug.echo": 1}
    assert usage["budget"] == {"usd": 1.0, "tokens": 0}
    assert (day["total_tokens"], day["budget"]) == (120, {"usd": 0.0, "tokens": 0})


def test_usage_is_the_callers_own_unless_an_operator_asks(stack: Stack) -> None:
    # Given a tenant and another one
    key, other = stack.new_key(), stack.new_key()
    with stack.client(other) as client:
        # Then a tenant may not read another's usage, but an operator may
        mine = client.get("/v1/usage").json()
        assert mine["tenant_id"] == tenant_of(stack, other) and mine["jobs"] == {}
        assert client.get("/v1/usage", params={"tenant_id": tenant_of(stack, key)}
                          ).status_code == 403
        assert client.get("/v1/usage", params={"period": "week"}).status_code == 422
    with stack.client(stack.new_key(operator=True)) as operator:
        assert operator.get("/v1/usage", params={"tenant_id": tenant_of(stack, key)}
                            ).json()["tenant_id"] == tenant_of(stack, key)
        assert operator.get("/v1/usage", params={"tenant_id": "ten_nobody"}).status_code == 404


def orchestrator(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(services.BIN / "orchestrator"), *args], env=stack.env,
                          capture_output=True, text=True, timeout=60)


def test_the_cli_sets_shows_and_clears_a_tenants_limits(stack: Stack) -> None:
    # Given a tenant
    key = stack.new_key()
    tenant = tenant_of(stack, key)
    # When an operator sets a concurrency limit and a budget with the CLI
    assert orchestrator(stack, "limits", "concurrency", "set", tenant, "debug.*", "3"
                        ).returncode == 0
    assert orchestrator(stack, "limits", "budget", "set", tenant, "--month-usd", "12"
                        ).returncode == 0
    # Then they are shown, and they are what the API reports
    shown = orchestrator(stack, "limits", "concurrency", "show", tenant).stdout
    assert "debug.*: at most 3 running" in shown
    assert "month: 12 USD" in orchestrator(stack, "limits", "budget", "show", tenant).stdout
    with stack.client(key) as client:
        assert client.get("/v1/usage").json()["budget"] == {"usd": 12.0, "tokens": 0}
    # And cleared, they are gone; an unknown tenant is one line and exit code 1
    orchestrator(stack, "limits", "concurrency", "clear", tenant, "debug.*")
    orchestrator(stack, "limits", "budget", "clear", tenant)
    assert orchestrator(stack, "limits", "concurrency", "show", tenant).stdout == ""
    assert "unlimited" in orchestrator(stack, "limits", "budget", "show", tenant).stdout
    unknown = orchestrator(stack, "limits", "budget", "show", "ten_nobody")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1, "tenant ten_nobody not found (give its id, ten_…, or its name)")


def replace_worker(stack: Stack) -> None:
    worker = stack.workers["all"]
    worker.kill(signal.SIGKILL)
    worker.stop()
    stack.start_worker("all", ["llm", "tools", "flow", "callbacks", "memory"], concurrency=20)


def celery_app_for(stack: Stack) -> Celery:
    app = Celery(broker=stack.env["REDIS_URL"])
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


def wait_until(done: Any, what: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_started(client: httpx.Client, job_id: str) -> None:
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["steps"][0]["status"]
               == "running", job_id)


def has_event(client: httpx.Client, job_id: str, kind: str) -> bool:
    return any(e["type"] == kind for e in client.get(f"/v1/jobs/{job_id}/events").json())


def wait_event(client: httpx.Client, job_id: str, kind: str) -> None:
    wait_until(lambda: has_event(client, job_id, kind), (job_id, kind))
