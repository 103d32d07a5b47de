"""Bad requests get a 4xx that says what to fix; the compatibility and operations routes."""

import uuid

import httpx
import pytest

from tests.integration.conftest import Stack, wait_job


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"intent": "nope.never", "inputs": {}}, 404, "Intent 'nope.never' not found"),
        ({"intent": "debug.sleep", "inputs": {"seconds": "soon"}}, 422, "inputs.seconds"),
        ({"intent": "debug.sleep", "inputs": {"seconds": -1}}, 422, "inputs.seconds"),
        ({"intent": "debug.chain", "inputs": {"steps": 0}}, 422, "inputs.steps"),
        ({"intent": "debug.echo", "mode": "flow"}, 422, "runs in mode 'agent'"),
        ({"intent": "debug.echo", "mode": "turbo"}, 422, "mode"),
        ({"inputs": {}}, 422, "send either `intent` or `prompt`"),
        ({"intent": "debug.echo", "callback_url": "not a url"}, 422, "callback_url"),
        ({"intent": "debug.echo", "surprise": 1}, 422, "surprise"),
    ],
    ids=["unknown-intent", "wrong-type", "below-minimum", "zero-steps", "wrong-mode",
         "unknown-mode", "missing-intent", "bad-callback", "unknown-field"],
)
def test_bad_submissions_say_what_to_fix(client: httpx.Client, body: dict, status: int,
                                         says: str) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    assert "Traceback" not in response.text


def test_unknown_intent_lists_the_available_ones(client: httpx.Client) -> None:
    body = client.post("/v1/jobs", json={"intent": "xyz"}).json()
    assert {"debug.echo", "debug.chain", "debug.sleep"} <= set(body["available"])


def test_form_body_is_told_to_send_json(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", content=b"intent=debug.echo",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]


def test_malformed_json_is_a_422(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", content=b'{"intent": ',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_body_over_one_mib_is_413(client: httpx.Client, chunked: bool) -> None:
    payload = b'{"intent": "debug.echo", "inputs": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
    content = iter([payload[i:i + 65536] for i in range(0, len(payload), 65536)]) \
        if chunked else payload
    response = client.post("/v1/jobs", content=content,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "over 1048576 bytes" in response.json()["error"]


def test_missing_or_wrong_key_is_401(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/v1/jobs").status_code == 401
    response = httpx.get(f"{stack.url}/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "unknown or revoked API key"


def test_unknown_job_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/jobs/job_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"] == "job job_doesnotexist not found"


def test_orchestrate_sync_answer(client: httpx.Client) -> None:
    response = client.post("/orchestrate", json={"intent": "debug.echo",
                                                 "inputs": {"text": uuid.uuid4().hex}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["mode"] == "agent"
    assert isinstance(body["duration_ms"], int)
    assert body["result"]["text"]


def test_orchestrate_with_callback_is_accepted_and_pollable(client: httpx.Client) -> None:
    response = client.post("/orchestrate", json={
        "intent": "debug.sleep", "inputs": {"seconds": 0.2}, "mode": "agent",
        "callback_url": "https://example.com/webhook"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert body["message"] == "Job accepted for async processing"
    assert body["callback_url"] == "https://example.com/webhook"
    wait_job(client, body["job_id"])
    polled = client.get(f"/jobs/{body['job_id']}").json()
    assert polled["status"] == "succeeded" and polled["result"]["slept"] >= 0.2


def test_orchestrate_unknown_intent_contract(client: httpx.Client) -> None:
    response = client.post("/orchestrate", json={"intent": "xyz", "inputs": {}})
    assert response.status_code == 404
    assert response.json()["error"] == "Intent 'xyz' not found"


def test_ready_sees_every_pool(stack: Stack) -> None:
    body = httpx.get(f"{stack.url}/ready").json()
    assert body["status"] == "ready"
    assert set(body["checks"]["pools"]) == {"llm", "tools", "memory", "flow", "callbacks"}


def test_metrics_and_intents(stack: Stack, client: httpx.Client) -> None:
    client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"m": 1}, "wait": True})
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'orchestrator_jobs{status="succeeded"}' in metrics
    assert 'orchestrator_jobs_submitted_total{intent="debug.echo"}' in metrics
    assert 'orchestrator_live_workers{pool="tools"}' in metrics
    intents = {i["name"]: i for i in client.get("/v1/intents").json()}
    assert intents["debug.sleep"]["input_schema"]["properties"]["seconds"]["maximum"] == 3600


def test_openapi_names_every_operation(stack: Stack) -> None:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert all(op.get("operationId") and op.get("summary") for op in operations)
