"""What the suite's short settings would hide, on a stack with the production values.

The main stack retries an open breaker twice (ORCHESTRATOR_UPSTREAM_RETRIES 2) under a poison
limit of 5; production retries 5 under a poison limit of 5, where a retry not counted by the
ledger would end the step as poison. The webhook secret's overlap is short here, so its end
is seen.
"""

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.integration.conftest import Stack, running_stack, wait_job
from tests.integration.receiver import reply, serve
from tests.integration.test_callbacks import submit_with_callback, wait_delivery

RETRIES = 5
OVERLAP = 2.0


@pytest.fixture(scope="module")
def defaults_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    env = {"ORCHESTRATOR_UPSTREAM_RETRIES": str(RETRIES),
           "ORCHESTRATOR_MAX_STEP_DELIVERIES": str(RETRIES),
           "CALLBACK_SECRET_OVERLAP": str(OVERLAP)}
    with running_stack(request, "sqlite", 9, env, name="defaults", split_workers=False) as running:
        yield running


@pytest.fixture
def client(defaults_stack: Stack) -> Iterator[httpx.Client]:
    with defaults_stack.client() as http:
        yield http


BROKEN = {"intent": "debug.fail", "inputs": {"unavailable_upstream": "flaky-api",
                                            "retry_after": 0.1}}


@pytest.mark.parametrize("job", [
    BROKEN,
    # A step continued in the run of the one before it: its retries start a message of its own
    {"intent": "debug.plan", "inputs": {"steps": [
        {"intent": "debug.echo", "inputs": {"n": 1}}, BROKEN]}},
], ids=["own message", "continued"])
def test_an_open_breaker_under_production_retries_ends_as_the_upstreams_error(
        client: httpx.Client, job: dict[str, Any]) -> None:
    # Given a step whose upstream's breaker stays open, retried 5 times under a poison limit of 5
    submitted = client.post("/v1/jobs", json=job).json()
    # When every retry finds it open
    finished = wait_job(client, submitted["job_id"], timeout=60)
    # Then the step was delivered 6 times (1 + 5 retries) and fails as the upstream's outage,
    # not as poison: the ledger counts deliberate retries apart from redeliveries
    events = [e["type"] for e in client.get(f"/v1/jobs/{submitted['job_id']}/events").json()]
    assert finished["status"] == "failed"
    assert "upstream flaky-api unavailable" in finished["error"], finished["error"]
    assert "poison" not in finished["error"]
    assert events.count("step_retrying") == RETRIES
    assert finished["steps"][-1]["attempts"] == RETRIES + 1
    assert [s["attempts"] for s in finished["steps"][:-1]] == [1] * (len(finished["steps"]) - 1)


def test_the_old_webhook_secret_stops_signing_after_the_overlap(client: httpx.Client) -> None:
    # Given a rotated secret (CALLBACK_SECRET_OVERLAP is 2 s here)
    old = client.get("/v1/webhook-secret").json()["secret"]
    rotated = client.post("/v1/webhook-secret/rotate").json()
    new, ends = rotated["secret"], datetime.fromisoformat(rotated["previous_expires_at"])
    with serve(reply(200)) as hook:
        # When one callback is sent during the overlap and one after it
        wait_delivery(client, submit_with_callback(client, hook.url), "succeeded")
        while datetime.now(ends.tzinfo) <= ends:
            time.sleep(0.1)
        wait_delivery(client, submit_with_callback(client, hook.url), "succeeded")
    during, after = hook.received
    # Then the first carries both signatures, the second the new one's only
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)


def test_a_resume_after_the_deadline_but_before_the_sweep_is_409(
        defaults_stack: Stack, client: httpx.Client) -> None:
    # Given no sweeper (it would expire the step first), and a step waiting 1 s for its resume
    assert defaults_stack.sweeper is not None
    defaults_stack.sweeper.stop()
    try:
        job_id = client.post("/v1/jobs", json={"intent": "debug.wait",
                                               "inputs": {"timeout": 1}}).json()["job_id"]
        url = waiting_resume_url(client, job_id)
        # When its deadline has passed, but nothing expired it yet
        time.sleep(1.2)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "waiting"
        answer = httpx.post(url, json={"late": True}, timeout=30)
        # Then the resume is refused with 409, saying why, and the step fails instead
        assert answer.status_code == 409, answer.text
        assert "stopped waiting" in answer.json()["error"]
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "failed" and job["steps"][0]["output"] is None
    finally:
        defaults_stack.start_sweeper()


def waiting_resume_url(client: httpx.Client, job_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for event in client.get(f"/v1/jobs/{job_id}/events").json():
            if event["type"] == "step_waiting":
                return str(event["data"]["resume_url"])
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} never waited")
