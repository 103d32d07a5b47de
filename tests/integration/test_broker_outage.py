"""A worker outlives a broker outage while it holds work, and the work ends."""

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from tasks.debug import RUNS_KEY
from tests import services
from tests.integration.conftest import Stack, running_stack, wait_job

pytestmark = pytest.mark.faults

# Long enough for the worker's reconnect loop to fail several times (kombu waits 2, 4, 6 s
# between tries): the path of an outage of any length, since the tries are unlimited
# (broker_connection_max_retries None, checked in tests/unit/test_workers.py); the tries'
# intervals are kombu's own (Celery passes no setting for them), so they cannot be shortened.
OUTAGE_SECONDS = 15
STEP_SECONDS = 6


def _all_running(client: httpx.Client, ids: list[str]) -> bool:
    return all(client.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids)


@pytest.fixture
def broker() -> Iterator[services.BrokerServer]:
    """A broker of this test's own that keeps its data (AOF) across a restart."""
    with services.redis_server(persist=True) as server:
        yield server


@pytest.fixture
def stack(request: pytest.FixtureRequest, broker: services.BrokerServer) -> Iterator[Stack]:
    """API, sweeper and one worker for every pool, on that broker."""
    with running_stack(request, "sqlite", 1, {}, name="outage", split_workers=False,
                       broker_url=broker.url) as running:
        yield running


@pytest.mark.timeout(OUTAGE_SECONDS + 240)
def test_a_worker_holding_work_outlives_a_broker_outage_of_several_reconnect_tries(
        stack: Stack, broker: services.BrokerServer) -> None:
    with stack.client() as client:
        worker = stack.workers["all"]
        # Given a worker holding steps that end while the broker is gone (unacknowledged), and
        # a chain whose second link can only be sent once the broker is back
        ids = [client.post("/v1/jobs", json={"intent": "debug.sleep", "inputs": {
            "seconds": STEP_SECONDS + n / 10}}).json()["job_id"] for n in range(3)]
        ids.append(client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": 2, "delay": STEP_SECONDS}}).json()["job_id"])
        deadline = time.monotonic() + 20
        while not _all_running(client, ids):
            assert time.monotonic() < deadline, "the steps did not all start"
            time.sleep(0.2)
        # When the broker is killed for 15 s, then started again on its AOF
        broker.kill()
        time.sleep(OUTAGE_SECONDS)
        broker.start()
        # Then a job submitted now succeeds
        new = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"n": 1}})
        assert new.status_code == 202, new.text
        assert wait_job(client, new.json()["job_id"], timeout=120)["status"] == "succeeded"
        # And the jobs held during the outage end, and the worker is the same live process
        jobs = [wait_job(client, job_id, timeout=60) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
        assert worker.popen.poll() is None, worker.log.read_text()[-3000:]
        assert "Unrecoverable error" not in worker.log.read_text()


SHORT_OUTAGE_SECONDS = 10


@pytest.fixture(params=["sqlite", "postgres"])
def holding_stack(request: pytest.FixtureRequest,
                  broker: services.BrokerServer) -> Iterator[Stack]:
    """A stack whose one worker runs a step at a time and holds up to four messages."""
    with running_stack(request, request.param, 1, {}, name=f"holding_{request.param}",
                       split_workers=False, broker_url=broker.url, concurrency=1,
                       prefetch=4) as running:
        yield running


def runs(stack: Stack, job_id: str, index: int) -> int:
    """How many times the step really ran (it counts itself in Redis)."""
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    return int(client.get(RUNS_KEY.format(job_id=job_id, index=index)) or 0)


@pytest.mark.timeout(120)
def test_steps_a_worker_held_through_a_broker_outage_end_soon_after_and_run_once(
        holding_stack: Stack, broker: services.BrokerServer) -> None:
    stack = holding_stack
    with stack.client() as client:
        # Given a worker running a chain's first link and holding two more jobs' first links
        # it received but has not started (unacknowledged in the broker, saved in its AOF)
        first = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": 2, "delay": 2, "count": True}}).json()["job_id"]
        _wait(lambda: _all_running(client, [first]), "the first step did not start")
        held = [client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": 2, "delay": 0.05, "count": True}}).json()["job_id"] for _ in range(2)]
        queue = redis.Redis.from_url(stack.env["REDIS_URL"])
        _wait(lambda: queue.llen("tools") == 0, "the worker did not take the messages")
        time.sleep(1.5)  # the AOF is written every second
        # When the broker is killed for a while: the first link ends and cannot hand off; the
        # held links start, cannot count themselves (Redis is gone) and cannot send their retry,
        # so Celery rejects their messages on a dead connection: they stay in the broker's
        # unacknowledged index, held by no one
        broker.kill()
        time.sleep(SHORT_OUTAGE_SECONDS)
        broker.start()
        back = time.monotonic()
        # Then every job ends soon after the broker is back (WORKER_LOST_AFTER, then two
        # checks of ORCHESTRATOR_LOST_AFTER), not after the visibility timeout; each step ran once
        jobs = [wait_job(client, job_id, timeout=30) for job_id in [first, *held]]
        elapsed = time.monotonic() - back
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j["error"] for j in jobs]
        assert elapsed < 30
        for job in jobs:
            assert [runs(stack, job["job_id"], s["index"]) for s in job["steps"]] == [1, 1], job
        print(f"all jobs terminal {elapsed:.1f}s after the broker came back")


def _wait(condition: Callable[[], bool], message: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)
