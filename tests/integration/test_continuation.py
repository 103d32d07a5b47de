"""A chain's next step on the same pool runs in the run that finished the previous one.

The step task hands its next step to itself instead of to the broker while its run is under
a second old; a step of another pool, or one after that second, goes by message. Counted here
from the workers' own `received` lines: one per message a worker took.

A continued step's retries under production's values: `test_production_defaults`.
"""

import re
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from core.store.limits import set_concurrency_limit
from core.store.tenants import tenant_for_key
from tasks.engine.starts import LEASE
from tests import services
from tests.integration.conftest import Stack, running_stack, wait_job

DB_INDEX = 8  # shared with test_callbacks' module stack: emptied first


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, broker_url: str) -> Iterator[Stack]:
    redis.Redis.from_url(broker_url.rsplit("/", 1)[0] + f"/{DB_INDEX}").flushdb()
    with running_stack(request, "sqlite", DB_INDEX, {}, name="continuation") as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


def messages(stack: Stack, job_id: str, index: str = r"\d+") -> int:
    """How many step messages of the job (of its step `index`) the tools worker took."""
    log = (stack.logs / "tools.log").read_text()
    return len(re.findall(rf"tasks\.tools\.step\[{job_id}-{index}\] received", log))


def test_a_chain_on_one_pool_runs_in_one_message(stack: Stack, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 5}}).json()
    done = wait_job(client, job["job_id"])
    assert done["status"] == "succeeded"
    assert [s["status"] for s in done["steps"]] == ["succeeded"] * 5
    # One message brought the first step; the other four followed it in the same run
    assert messages(stack, job["job_id"]) == 1
    assert len({s["worker"] for s in done["steps"]}) == 1


def test_a_chain_goes_on_by_message_once_its_run_is_a_second_old(
        stack: Stack, client: httpx.Client) -> None:
    # Each link waits 1.2 s: the run that ran one has passed its second
    job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 3, "delay": 1.2}}).json()
    assert wait_job(client, job["job_id"])["status"] == "succeeded"
    assert messages(stack, job["job_id"]) == 3


def test_a_step_of_another_pool_goes_by_message(stack: Stack, client: httpx.Client) -> None:
    # The planner runs on `llm`; the two steps it adds run on `tools`
    job = client.post("/v1/jobs", json={"intent": "debug.plan", "inputs": {"steps": [
        {"intent": "debug.echo", "inputs": {"n": 1}},
        {"intent": "debug.echo", "inputs": {"n": 2}}]}}).json()
    done = wait_job(client, job["job_id"])
    assert done["status"] == "succeeded"
    # The first tools step came by message; the second followed it
    assert messages(stack, job["job_id"]) == 1


def test_a_link_whose_slot_cannot_be_asked_for_goes_by_message_after_its_end_commits(
        stack: Stack, broker: services.BrokerServer) -> None:
    # Given a tenant whose links run under a concurrency limit (a start asks Redis for a slot)
    key = stack.new_key()
    with stack.db.write() as session:
        tenant = tenant_for_key(session=session, raw_key=key)
        assert tenant is not None
        set_concurrency_limit(session=session, tenant_id=tenant, pattern="debug.chain.link",
                              max_running=50)
    with stack.client(key) as client:
        # And a chain of two whose first link is running (it takes 0.8 s, within the run's second;
        # its lease is taken as it starts, its start written only half a second later)
        job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": 2, "delay": 0.8}}).json()
        lease = LEASE.format(job_id=job["job_id"], index=0)
        deadline = time.monotonic() + 10
        with redis.Redis.from_url(stack.env["REDIS_URL"]) as leases:
            while not leases.exists(lease):
                assert time.monotonic() < deadline, "the first link never started"
                time.sleep(0.01)
        # When Redis goes away before it ends, and comes back a moment after
        broker.stop()
        try:
            time.sleep(1.5)
        finally:
            broker.start()
        # Then its end was recorded all the same: it ran once, from its one message
        done = wait_job(client, job["job_id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert [s["attempts"] for s in done["steps"]] == [1, 1]
        assert messages(stack, job["job_id"], "0") == 1
        # And the second link came by a message of its own (the sweeper sent it: the hand-off had
        # no broker), not in the same run
        assert messages(stack, job["job_id"], "1") == 1
