"""A step's start written late (`tasks.engine.starts`): with its end when the step is quick,
after `RECORD_AFTER` when it runs long, and a lease in Redis in between, so a second delivery
of a step whose start is not written yet never runs it."""

import json
import time
from typing import Any

import httpx
import redis
from sqlalchemy import select

from core.events import CHANNEL
from core.store.tables import STEPS
from tasks.engine.starts import LEASE, RECORD_AFTER
from tests.integration.conftest import Stack, wait_job
from tests.integration.test_worker_loss import runs, send_to_other_process


def announcements(pubsub: Any, job_id: str, until: str, timeout: float = 30) -> list[list[str]]:
    """The event types of each live message about `job_id`, until one holds `until`."""
    found: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while not any(until in types for types in found):
        assert time.monotonic() < deadline, found
        message = pubsub.get_message(timeout=1)
        if message and message["type"] == "message":
            types = [e["type"] for e in json.loads(message["data"]) if e["job_id"] == job_id]
            found += [types] if types else []
    return found


def step_status(stack: Stack, job_id: str) -> str:
    with stack.db.read() as session:
        return str(session.execute(select(STEPS.c.status).where(
            STEPS.c.job_id == job_id, STEPS.c.index == 0)).scalar_one())


def test_a_quick_steps_start_is_written_and_announced_with_its_end(
        stack: Stack, client: httpx.Client) -> None:
    # Given a listener of the live events
    pubsub = redis.Redis.from_url(stack.env["REDIS_URL"]).pubsub()
    pubsub.subscribe(CHANNEL)
    try:
        # When a quick one-step job runs
        job_id = client.post("/v1/jobs", json={"intent": "debug.echo",
                                               "inputs": {"n": time.time()}}).json()["job_id"]
        found = announcements(pubsub, job_id, "job_succeeded")
    finally:
        pubsub.close()
    # Then its start and its end came in one message (one transaction wrote them), in order
    assert found == [["job_started", "step_started", "step_succeeded", "job_succeeded"]], found
    job = wait_job(client, job_id)
    assert job["steps"][0]["attempts"] == 1
    assert job["steps"][0]["started_at"] <= job["steps"][0]["finished_at"]


def test_a_long_steps_start_is_written_while_it_runs(stack: Stack, client: httpx.Client) -> None:
    # Given a step that runs for 4 s
    submitted = time.monotonic()
    job_id = client.post("/v1/jobs", json={"intent": "debug.sleep",
                                           "inputs": {"seconds": 4}}).json()["job_id"]
    # Then it is seen running soon after RECORD_AFTER, long before it ends
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != "running":
        assert job["status"] == "queued", job
        assert time.monotonic() - submitted < RECORD_AFTER + 2.5, "its start was not written"
        time.sleep(0.05)
    assert job["steps"][0]["status"] == "running" and job["steps"][0]["attempts"] == 1
    assert "step_started" in [e["type"] for e in
                              client.get(f"/v1/jobs/{job_id}/events").json()]
    assert wait_job(client, job_id)["status"] == "succeeded"


def test_a_second_delivery_before_the_start_is_written_never_runs_the_step(
        stack: Stack, client: httpx.Client) -> None:
    # Given a step running on the tools worker that counts its runs, its lease taken but its
    # start not written yet (the ledger still says pending)
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 1, "delay": 1.5, "count": True}}).json()["job_id"]
    lease = LEASE.format(job_id=job_id, index=0)
    deadline = time.monotonic() + 10
    while not broker.exists(lease):
        assert time.monotonic() < deadline, "no lease taken"
        time.sleep(0.005)
    assert step_status(stack, job_id) == "pending"
    # When its message is delivered at once to another live process
    send_to_other_process(stack, job_id, 0)
    # Then that delivery never ran it: the step ran once, in one attempt
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["steps"][0]["attempts"] == 1
    time.sleep(1.0)
    assert runs(stack, job_id, 0) == 1
