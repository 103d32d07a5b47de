"""Faults on a running stack, each ending with every accepted job terminal, no step run again
after it succeeded, and none failed by an outage shorter than its retry budget.

One stack on a broker of its own that keeps its data (AOF), so the broker can be SIGKILLed and
started again; the API, the sweeper and a callback receiver are killed or stopped here too.
(The worker SIGKILL during 100 counted jobs is in test_worker_loss.py.)
"""

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from tasks.debug import RUNS_KEY
from tests import services
from tests.integration.conftest import Stack, running_stack, wait_job
from tests.integration.receiver import reply, serve
from tests.integration.test_callbacks import wait_delivery
from tests.integration.test_worker_loss import store_job

pytestmark = pytest.mark.faults

BURST = 30
CALLBACK_BUDGET = [1.0, 1.0, 1.0, 1.0, 1.0]  # seconds between attempts: 5 s of retries


@pytest.fixture(scope="module")
def broker() -> Iterator[services.BrokerServer]:
    with services.redis_server(persist=True) as server:
        yield server


@pytest.fixture(scope="module")
def faults_stack(request: pytest.FixtureRequest,
                 broker: services.BrokerServer) -> Iterator[Stack]:
    env = {"CALLBACK_SCHEDULE": str(CALLBACK_BUDGET)}
    with running_stack(request, "sqlite", 0, env, name="faults", split_workers=False,
                       broker_url=broker.url) as running:
        yield running


@pytest.fixture
def client(faults_stack: Stack) -> Iterator[httpx.Client]:
    with faults_stack.client() as http:
        yield http


def counted_chain(n: int) -> dict[str, Any]:
    return {"intent": "debug.chain", "inputs": {"steps": 2, "delay": 0.1 + n / 1e6,
                                                "count": True}}


def assert_ran_once_each(stack: Stack, client: httpx.Client, jobs: list[dict[str, Any]]) -> None:
    """Every job succeeded; no step started again after it succeeded (the ledger's events),
    and no step ran more often than the ledger started it (the steps count their runs)."""
    assert [j["status"] for j in jobs] == ["succeeded"] * len(jobs), [
        j["error"] for j in jobs if j["status"] != "succeeded"]
    counts = redis.Redis.from_url(stack.env["REDIS_URL"])
    for job in jobs:
        events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
        for step in job["steps"]:
            mine = [e["type"] for e in events if e["data"].get("index") == step["index"]
                    and e["type"] in ("step_started", "step_succeeded")]
            assert mine[-2:] == ["step_started", "step_succeeded"], (job["job_id"], mine)
            assert mine.count("step_succeeded") == 1
            runs = int(counts.get(RUNS_KEY.format(job_id=job["job_id"], index=step["index"]))
                       or 0)
            assert runs <= step["attempts"], job


def test_a_broker_sigkill_and_restart_on_its_aof_during_200_jobs(
        faults_stack: Stack, client: httpx.Client, broker: services.BrokerServer) -> None:
    # Given 200 two-step jobs that count their steps' runs, accepted and in flight
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda n: client.post("/v1/jobs", json=counted_chain(n))
                            .json()["job_id"], range(200)))
    # When the broker is SIGKILLed and started again on its AOF 3 s later
    broker.kill()
    time.sleep(3)
    broker.start()
    # Then every job ends, each step having run once
    jobs = [wait_job(client, job_id, timeout=120) for job_id in ids]
    assert_ran_once_each(faults_stack, client, jobs)
    faults_stack.wait_ready(timeout=60)


class Burst:
    """Clients submitting jobs, each with its own Idempotency-Key, retrying until accepted."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.stack, self.key = stack, key
        self.accepted: dict[str, str] = {}  # idempotency key → job id
        self.lock = threading.Lock()

    def submit(self, n: int) -> None:
        idempotency = f"burst-{uuid.uuid4().hex}"
        body = counted_chain(n)
        deadline = time.monotonic() + 120
        with self.stack.client(self.key) as http:
            while time.monotonic() < deadline:
                try:
                    answer = http.post("/v1/jobs", json=body,
                                       headers={"Idempotency-Key": idempotency}, timeout=10)
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    with self.lock:
                        self.accepted[idempotency] = answer.json()["job_id"]
                    return
                assert answer is None or answer.status_code >= 500, answer.text
                time.sleep(0.2)
        raise TimeoutError(f"job {n} never accepted")


def kill_api(stack: Stack) -> None:
    """SIGKILL the API (every process of it), then start it again on its port."""
    assert stack.api is not None
    os.killpg(stack.api.pid, signal.SIGKILL)
    stack.api.stop()
    stack.api = services.start_api(stack.env, stack.logs / "api.log")


def test_the_api_sigkilled_three_times_during_bursts_loses_no_accepted_job(
        faults_stack: Stack) -> None:
    key = faults_stack.new_key()
    burst = Burst(faults_stack, key)
    # Given clients submitting 3 bursts of 30 jobs, retrying with their Idempotency-Key
    with ThreadPoolExecutor(max_workers=8) as pool:
        for round_ in range(3):
            before = len(burst.accepted)
            futures = [pool.submit(burst.submit, round_ * BURST + n) for n in range(BURST)]
            # When the API is SIGKILLed in the middle of each burst, and started again
            while len(burst.accepted) < before + 5:
                time.sleep(0.02)
            kill_api(faults_stack)
            for future in futures:
                future.result()
    faults_stack.wait_ready(timeout=60)
    # Then every key is one job: asked again, the API answers the same job
    with faults_stack.client(key) as client:
        assert len(set(burst.accepted.values())) == len(burst.accepted) == 3 * BURST
        for idempotency, job_id in list(burst.accepted.items())[::5]:
            again = client.post("/v1/jobs", json={"intent": "debug.echo"},
                                headers={"Idempotency-Key": idempotency})
            assert again.json()["job_id"] == job_id
        listed = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        assert {j["job_id"] for j in listed} == set(burst.accepted.values())
        # And every accepted job ends, each step having run once
        jobs = [wait_job(client, job_id, timeout=120) for job_id in burst.accepted.values()]
        assert_ran_once_each(faults_stack, client, jobs)


def test_while_the_sweeper_is_dead_jobs_run_and_what_it_owes_waits_for_it(
        faults_stack: Stack, client: httpx.Client) -> None:
    # Given the sweeper SIGKILLed
    sweeper = faults_stack.sweeper
    assert sweeper is not None
    os.killpg(sweeper.pid, signal.SIGKILL)
    sweeper.stop()
    try:
        # Then a user's jobs still run: the sweeper is not on their way
        job = client.post("/v1/jobs", json={**counted_chain(0), "wait": 30}).json()
        assert job["status"] == "succeeded", job
        # But a job whose message was lost (committed, never enqueued) stays queued, as the
        # user sees it, and a wait past its deadline still shows waiting
        lost = store_job(faults_stack, client, steps=1)
        waiting = client.post("/v1/jobs", json={"intent": "debug.wait",
                                                "inputs": {"timeout": 0.5}}).json()["job_id"]
        time.sleep(3)  # longer than ORCHESTRATOR_LOST_AFTER and the wait's deadline
        assert client.get(f"/v1/jobs/{lost}").json()["status"] == "queued"
        assert client.get(f"/v1/jobs/{waiting}").json()["status"] == "waiting"
    finally:
        # When it is started again
        faults_stack.start_sweeper()
    # Then it catches up: the lost job is sent and succeeds, the wait fails at its deadline
    assert wait_job(client, lost, timeout=30)["status"] == "succeeded"
    expired = wait_job(client, waiting, timeout=30)
    assert expired["status"] == "failed" and "no resume by" in expired["error"]


def test_a_callback_receiver_down_then_up_within_the_budget_gets_every_callback_once(
        faults_stack: Stack, client: httpx.Client) -> None:
    # Given a receiver's port that refuses connections (the receiver is down)
    port = services.free_port()
    url = f"http://127.0.0.1:{port}/hook"
    ids = [client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"n": n},
                                         "callback_url": url}).json()["job_id"]
           for n in range(10)]
    jobs = [wait_job(client, job_id) for job_id in ids]
    time.sleep(1.5)  # a first attempt or two fail
    # When it comes back within the retry budget (5 attempts, 1 s apart)
    with serve(reply(200), port=port) as hook:
        done = [wait_delivery(client, job_id, "succeeded", timeout=30) for job_id in ids]
    # Then every job ended, and each callback arrived, once, after failed attempts
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert sorted(r.headers["webhook-id"] for r in hook.received) == sorted(
        d["id"] for d in done)
    assert all(d["attempt_log"][0]["status_code"] is None for d in done), done[0]
