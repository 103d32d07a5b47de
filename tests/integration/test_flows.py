"""Flows as steps against a real n8n and a loopback server speaking ActivePieces' protocol."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.integration import activepieces
from tests.integration.conftest import FlowPorts, Stack, wait_job
from tests.n8n import N8n


@pytest.fixture(scope="module")
def activepieces_server(flow_ports: FlowPorts) -> Iterator[str]:
    with activepieces.serve(flow_ports.activepieces) as url:
        yield url


def submit(client: httpx.Client, intent: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"intent": intent, **body})
    assert response.status_code in (200, 202), response.text
    return dict(response.json())


@pytest.mark.n8n
@pytest.mark.timeout(300)
def test_a_flow_that_answers_at_once_gives_the_step_its_answer_signed_by_the_tenant(
        n8n: N8n, client: httpx.Client) -> None:
    # When an n8n flow (Webhook → Respond to Webhook) is submitted
    job = wait_job(client, submit(client, "test.n8n_sync", inputs={"question": "hi"})["job_id"])
    # Then its answer is the step's output, and the job ran in mode flow on the flow pool
    assert job["status"] == "succeeded", job["error"]
    assert job["mode"] == "flow" and job["steps"][0]["pool"] == "flow"
    answer = job["result"]
    assert answer["echo"] == {"question": "hi"} and answer["job_id"] == job["job_id"]
    assert answer["intent"] == "test.n8n_sync" and answer["step"] == 0
    # And the call was signed the Standard Webhooks way with the tenant's secret
    secret = client.get("/v1/webhook-secret").json()["secret"]
    body = json.dumps({"intent": "test.n8n_sync", "inputs": {"question": "hi"},
                       "job_id": job["job_id"], "step": 0,
                       "resume_url": answer["resume_url"]}, separators=(",", ":"))
    headers = {"webhook-id": answer["headers"]["id"],
               "webhook-timestamp": answer["headers"]["timestamp"],
               "webhook-signature": answer["headers"]["signature"]}
    Webhook(secret).verify(body, headers)
    assert answer["headers"]["id"] == f"{job['job_id']}-0"


@pytest.mark.n8n
@pytest.mark.timeout(300)
def test_a_flow_that_answers_202_waits_and_is_resumed_by_the_workflow(
        n8n: N8n, client: httpx.Client) -> None:
    # Given an n8n flow that answers 202 at once, then calls the resume URL (HTTP Request node)
    job_id = submit(client, "test.n8n_async", inputs={"question": "later"})["job_id"]
    # Then the step waits, and goes on with what the workflow posted
    job = wait_job(client, job_id, timeout=60)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"] == {"answer": "LATER", "by": "n8n"}
    types = [e["type"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert "step_resumed" in types and "step_failed" not in types


@pytest.mark.n8n
@pytest.mark.timeout(300)
def test_a_4xx_from_the_flow_fails_the_step_without_a_retry(n8n: N8n,
                                                            client: httpx.Client) -> None:
    job = wait_job(client, submit(client, "test.n8n_missing")["job_id"])
    assert job["status"] == "failed" and "upstream flow:n8n: answered 404" in job["error"]
    assert job["steps"][0]["attempts"] == 1


def test_activepieces_sync_and_async_webhooks_both_work(
        activepieces_server: str, client: httpx.Client) -> None:
    sync = wait_job(client, submit(client, "test.ap_sync", inputs={"question": "abc"})["job_id"])
    assert sync["status"] == "succeeded", sync["error"]
    assert sync["result"] == {"answer": "cba", "flow": "flowSync01", "by": "activepieces"}
    later = wait_job(client, submit(client, "test.ap_async",
                                    inputs={"question": "xyz"})["job_id"], timeout=30)
    assert later["status"] == "succeeded", later["error"]
    assert later["result"] == {"answer": "zyx", "flow": "flowAsync01", "by": "activepieces"}


def test_flows_are_intents_of_mode_flow_for_their_tenants_only(client: httpx.Client) -> None:
    intents = {i["name"]: i for i in client.get("/v1/intents").json()}
    assert intents["test.n8n_sync"]["mode"] == "flow"
    assert intents["test.n8n_sync"]["input_schema"]["required"] == ["question"]
    assert {"gmail.triage", "slack.summarize", "calendar.schedule"} <= set(intents)
    assert "test.private" not in intents
    assert client.post("/v1/jobs", json={"intent": "test.private"}).status_code == 404
    wrong = client.post("/v1/jobs", json={"intent": "test.n8n_sync", "mode": "agent",
                                          "inputs": {"question": "x"}})
    assert wrong.status_code == 422 and "runs in mode 'flow'" in wrong.json()["error"]
    invalid = client.post("/v1/jobs", json={"intent": "test.n8n_sync", "inputs": {}})
    assert invalid.status_code == 422 and "'question' is a required property" in invalid.text


@pytest.mark.n8n
@pytest.mark.timeout(300)
def test_a_stopped_n8n_opens_the_engines_breaker(n8n: N8n, stack: Stack,
                                                 client: httpx.Client) -> None:
    operator = stack.client(stack.new_key(operator=True))
    n8n.stop()
    try:
        # When flows are called while n8n is down (BREAKER_OVERRIDES gives flow 2 in this stack)
        for n in range(2):
            job = wait_job(client, submit(client, "test.n8n_sync",
                                          inputs={"question": f"down {n}"})["job_id"])
            assert job["status"] == "failed"
            assert "could not reach the n8n webhook" in job["error"]
        # Then the engine's breaker is open, and a further flow step waits for it
        breakers = {b["name"]: b for b in operator.get("/v1/breakers").json()}
        assert breakers["flow:n8n"]["state"] == "open", breakers
        job_id = submit(client, "test.n8n_sync", inputs={"question": "open"})["job_id"]
        deadline = time.monotonic() + 20
        while "step_retrying" not in [e["type"] for e in
                                      client.get(f"/v1/jobs/{job_id}/events").json()]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        client.post(f"/v1/jobs/{job_id}/cancel")
    finally:
        n8n.start()
        operator.post("/v1/breakers/flow:n8n/reset")
        operator.close()
