"""A short broker outage fails no running step."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import services
from tests.integration import receiver
from tests.integration.conftest import Stack, wait_job

OUTAGE_SECONDS = 6  # two of the worker's reconnect tries (kombu waits 2, then 4 s)
STEP_SECONDS = OUTAGE_SECONDS + 8  # all 50 running before the outage, ending after it


@pytest.mark.faults
def test_a_broker_restart_during_fifty_running_steps_fails_none(
        stack: Stack, client: httpx.Client, broker: services.BrokerServer) -> None:
    # Given 50 debug.sleep steps running (they check the cancel flag in Redis as they sleep),
    # long enough to end only after the outage
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda i: client.post("/v1/jobs", json={
            "intent": "debug.sleep", "inputs": {"seconds": STEP_SECONDS + i / 1000}}
        ).json()["job_id"], range(50)))
    deadline = time.monotonic() + 20
    while sum(client.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids) < 50:
        assert time.monotonic() < deadline, "the steps did not all start"
        time.sleep(0.2)
    # When the broker is down for 6 s and comes back empty (no persistence)
    broker.stop()
    time.sleep(OUTAGE_SECONDS)
    broker.start()
    # Then every job still succeeds, each step having run once
    jobs = [wait_job(client, job_id, timeout=90) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 50, [j["error"] for j in jobs]
    assert all(j["steps"][0]["attempts"] == 1 for j in jobs)
    stack.wait_ready(timeout=60)


def test_a_submission_the_broker_refuses_leaves_nothing_behind(
        stack: Stack, client: httpx.Client, broker: services.BrokerServer) -> None:
    with receiver.serve(receiver.reply(200)) as hook:
        # Given the broker is down
        broker.stop()
        try:
            # When a job with a callback is submitted
            refused = client.post("/v1/jobs", json={
                "intent": "debug.echo", "inputs": {"n": 1}, "callback_url": f"{hook.url}/h"})
        finally:
            broker.start()
        # Then it is refused with 503, and nothing of it can be seen or is called back
        assert refused.status_code == 503, refused.text
        assert "not started" in refused.json()["error"]
        assert client.get("/v1/jobs").json()["items"] == []
        time.sleep(2)
        assert hook.received == []
        # And the same request, retried, is a new job that runs
        stack.wait_ready(timeout=60)
        retried = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"n": 1},
                                                "wait": True})
        assert retried.status_code == 200 and retried.json()["status"] == "succeeded"
