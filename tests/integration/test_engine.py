"""The engine with real workers: plans that grow, references, held and waiting steps."""

import functools
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from core.models import JobStep
from core.store.ledger import begin_step, finish_step
from core.store.submission import submit_job
from core.store.tables import NewStep, new_job_id
from core.store.tenants import tenant_for_key
from tests.integration.conftest import Stack, wait_job
from tests.integration.test_worker_loss import runs


def events_of(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/jobs/{job_id}/events").json())


def wait_status(client: httpx.Client, job_id: str, status: str,
                timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != status:
        assert time.monotonic() < deadline, f"job {job_id} is {job['status']}, not {status}"
        time.sleep(0.05)
    return dict(job)


PLAN = [
    {"intent": "debug.echo", "inputs": {"results": [{"id": "a"}, {"id": "b"}]}},
    {"intent": "debug.sleep", "inputs": {"seconds": 0.1}},
    {"intent": "debug.echo", "inputs": {"found": {"$ref": "steps.1.output.results"},
                                        "second": {"$ref": "steps.1.output.results.1.id"}}},
]


def test_a_planning_step_grows_the_plan_and_a_later_step_uses_an_earlier_output(
        client: httpx.Client) -> None:
    # Given a planning step that appends three steps, the third referring to the first
    job_id = client.post("/v1/jobs", json={"intent": "debug.plan",
                                           "inputs": {"steps": PLAN}}).json()["job_id"]
    # When it runs
    job = wait_job(client, job_id)
    # Then the three steps ran after it, on their pools, and the reference was resolved
    assert job["status"] == "succeeded", job["error"]
    assert [(s["intent"], s["pool"], s["status"]) for s in job["steps"]] == [
        ("debug.plan", "llm", "succeeded"), ("debug.echo", "tools", "succeeded"),
        ("debug.sleep", "tools", "succeeded"), ("debug.echo", "tools", "succeeded")]
    assert job["result"] == {"found": [{"id": "a"}, {"id": "b"}], "second": "b"}
    assert job["progress"] == 1.0
    extended = [e for e in events_of(client, job_id) if e["type"] == "plan_extended"]
    assert [s["index"] for s in extended[0]["data"]["steps"]] == [1, 2, 3]


def test_a_reference_that_does_not_resolve_fails_the_step_naming_the_field(
        client: httpx.Client) -> None:
    steps = [{"intent": "debug.echo", "inputs": {"x": 1}},
             {"intent": "debug.echo", "inputs": {"y": {"$ref": "steps.1.output.nope"}}}]
    job = wait_job(client, client.post("/v1/jobs", json={
        "intent": "debug.plan", "inputs": {"steps": steps}}).json()["job_id"])
    assert job["status"] == "failed"
    assert "step 2 (debug.echo) failed: inputs.y: 'steps.1.output.nope' does not resolve" \
        in job["error"]


def test_inputs_that_do_not_validate_when_the_step_starts_fail_it_naming_the_field(
        client: httpx.Client) -> None:
    # Given a planned sleep whose seconds come from an output that is not a number
    steps = [{"intent": "debug.echo", "inputs": {"s": "long"}},
             {"intent": "debug.sleep", "inputs": {"seconds": {"$ref": "steps.1.output.s"}}}]
    job = wait_job(client, client.post("/v1/jobs", json={
        "intent": "debug.plan", "inputs": {"steps": steps}}).json()["job_id"])
    assert job["status"] == "failed" and "inputs.seconds:" in job["error"], job["error"]


def test_a_plan_naming_an_unknown_intent_fails_the_planning_step(client: httpx.Client) -> None:
    job = wait_job(client, client.post("/v1/jobs", json={"intent": "debug.plan", "inputs": {
        "steps": [{"intent": "no.such", "inputs": {}}]}}).json()["job_id"])
    assert job["status"] == "failed" and "Intent 'no.such' not found" in job["error"]
    assert len(job["steps"]) == 1


def test_the_sweeper_resumes_a_grown_plan_whose_message_was_lost(
        stack: Stack, client: httpx.Client) -> None:
    # Given a job whose planning step succeeded and grew the plan, but whose next message is gone
    raw_key = client.headers["authorization"].split()[1]
    with stack.db.write() as session:
        tenant = tenant_for_key(session=session, raw_key=raw_key)
        assert tenant is not None
        job, _, _ = submit_job(
            session=session, job_id=new_job_id(), tenant_id=tenant, intent="debug.plan",
            mode="agent", inputs={}, context={}, callback_url=None,
            steps=[NewStep("debug.plan", "llm", {})], idempotency_key=new_job_id(),
            window=3600)
        begin_step(session=session, job_id=job.id, index=0, runner="gone:1",
                         max_deliveries=3)
        finish_step(session=session, job_id=job.id, index=0, output={"planned": 2},
                          extend=[NewStep("debug.echo", "tools", {"v": 7}),
                                  NewStep("debug.echo", "tools",
                                          {"w": {"$ref": "steps.1.output.v"}})])
    # Then the sweeper sends it on from its first unfinished step and it succeeds
    finished = wait_job(client, job.id, timeout=30)
    assert finished["status"] == "succeeded" and finished["result"] == {"w": 7}
    requeued = [e["data"]["index"] for e in events_of(client, job.id)
                if e["type"] == "job_requeued"]
    assert requeued == [1]


def held(client: httpx.Client, **inputs: Any) -> tuple[str, dict[str, Any]]:
    job_id = client.post("/v1/jobs", json={"intent": "debug.hold",
                                           "inputs": inputs}).json()["job_id"]
    job = wait_status(client, job_id, "awaiting_approval")
    return job_id, job["pending"]


def test_a_held_step_runs_once_approved_with_its_token(client: httpx.Client) -> None:
    # Given a held step: it holds no worker and says what is held and why
    job_id, pending = held(client, reason="deletes a table", payload={"n": 1})
    assert pending["status"] == "held" and pending["reason"] == "deletes a table"
    assert pending["inputs"]["payload"] == {"n": 1} and pending["token"].startswith("apv_")
    time.sleep(0.5)
    assert client.get(f"/v1/jobs/{job_id}").json()["steps"][0]["attempts"] == 1
    # When it is approved with its token
    response = client.post(f"/v1/jobs/{job_id}/approve", json={"token": pending["token"]})
    # Then it runs
    assert response.status_code == 200, response.text
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded" and job["result"] == {"approved": True,
                                                              "payload": {"n": 1}}
    types = [e["type"] for e in events_of(client, job_id)]
    assert types.index("step_held") < types.index("step_approved") < types.index(
        "step_succeeded")
    # And the token cannot be used again
    again = client.post(f"/v1/jobs/{job_id}/approve", json={"token": pending["token"]})
    assert again.status_code == 409


def test_a_token_of_another_step_or_a_changed_input_is_refused_and_nothing_runs(
        stack: Stack, client: httpx.Client) -> None:
    first, _ = held(client, payload={"a": 1})
    second, other = held(client, payload={"a": 2})
    refused = client.post(f"/v1/jobs/{first}/approve", json={"token": other["token"]})
    assert refused.status_code == 403 and "another step" in refused.json()["error"]
    # When the held step's inputs change after the token was issued
    third, pending = held(client, payload={"a": 3})
    with stack.db.write() as session:
        session.execute(update(JobStep).where(JobStep.job_id == third)  # type: ignore[arg-type]
                        .values(inputs={**pending["inputs"], "payload": {"a": 666}}))
    changed = client.post(f"/v1/jobs/{third}/approve", json={"token": pending["token"]})
    assert changed.status_code == 403
    time.sleep(0.5)
    for job_id in (first, third):
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "awaiting_approval" and job["steps"][0]["status"] == "held"


def test_an_approval_after_expiry_fails_the_step(client: httpx.Client) -> None:
    job_id, pending = held(client, expires_in=0.5)
    time.sleep(0.8)
    response = client.post(f"/v1/jobs/{job_id}/approve", json={"token": pending["token"]})
    assert response.status_code in (404, 409), response.text
    job = wait_job(client, job_id)
    assert job["status"] == "failed" and "no approval by" in job["error"]
    assert "step_expired" in [e["type"] for e in events_of(client, job_id)]


def test_an_unanswered_hold_is_expired_by_the_sweeper(client: httpx.Client) -> None:
    job_id, _ = held(client, expires_in=0.5)
    job = wait_job(client, job_id, timeout=10)
    assert job["status"] == "failed" and "no approval by" in job["error"]


def test_a_rejected_step_fails_the_job_with_the_reason(client: httpx.Client) -> None:
    job_id, _ = held(client)
    response = client.post(f"/v1/jobs/{job_id}/reject", json={"reason": "not today"})
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["error"] == "step 0 (debug.hold) failed: rejected: not today"
    assert "step_rejected" in [e["type"] for e in events_of(client, job_id)]


def test_another_tenant_cannot_approve_or_reject(stack: Stack, client: httpx.Client) -> None:
    job_id, pending = held(client)
    with stack.client() as stranger:
        assert stranger.post(f"/v1/jobs/{job_id}/approve",
                             json={"token": pending["token"]}).status_code == 404
        assert stranger.post(f"/v1/jobs/{job_id}/reject", json={}).status_code == 404


def waiting(client: httpx.Client, **inputs: Any) -> tuple[str, str]:
    job_id = client.post("/v1/jobs", json={"intent": "debug.plan", "inputs": {"steps": [
        {"intent": "debug.wait", "inputs": inputs},
        {"intent": "debug.echo", "inputs": {"got": {"$ref": "steps.1.output.answer"}}}]}}
    ).json()["job_id"]
    pending = wait_status(client, job_id, "waiting")["pending"]
    return job_id, pending["resume_url"]


def test_a_waiting_step_is_resumed_once_by_its_url_without_a_key(client: httpx.Client) -> None:
    job_id, url = waiting(client)
    assert url.startswith(str(client.base_url)) and "/v1/resume/rsm_" in url
    # When an outside system (no API key) posts its result to the resume URL
    response = httpx.post(url, json={"answer": 42})
    # Then the step succeeds with that body and the chain goes on
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == job_id and response.json()["index"] == 1
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded" and job["result"] == {"got": 42}
    types = [e["type"] for e in events_of(client, job_id)]
    assert "step_waiting" in types and "step_resumed" in types
    # And a second use is refused
    assert httpx.post(url, json={"answer": 43}).status_code == 404


def test_a_wait_that_is_never_resumed_fails_at_its_deadline(client: httpx.Client) -> None:
    job_id, url = waiting(client, timeout=0.5)
    job = wait_job(client, job_id, timeout=10)
    assert job["status"] == "failed" and "no resume by" in job["error"]
    assert httpx.post(url, json={}).status_code == 404


def test_cancel_ends_a_waiting_job(client: httpx.Client) -> None:
    job_id, url = waiting(client)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert httpx.post(url, json={}).status_code == 404


@pytest.mark.parametrize("body", ["[1, 2]", "not json"], ids=["not-an-object", "not-json"])
def test_a_resume_body_must_be_a_json_object(client: httpx.Client, body: str) -> None:
    _, url = waiting(client)
    response = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422) and "error" in response.json()


def test_an_intent_with_a_plan_of_its_own_cannot_be_planned(client: httpx.Client) -> None:
    job = wait_job(client, client.post("/v1/jobs", json={"intent": "debug.plan", "inputs": {
        "steps": [{"intent": "debug.chain", "inputs": {"steps": 2}}]}}).json()["job_id"])
    assert job["status"] == "failed" and "plans steps of its own" in job["error"]


def _race(calls: list[Callable[[], httpx.Response]]) -> list[int]:
    """Start every call at once (behind a barrier) and collect the status codes."""
    gate = threading.Barrier(len(calls))

    def go(call: Callable[[], httpx.Response]) -> int:
        gate.wait()
        return call().status_code

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(go, calls))


COUNTED_LINK = {"intent": "debug.chain.link", "inputs": {"step": 1, "of": 1, "count": True}}
RACERS = 50


def test_fifty_concurrent_resumes_of_one_token_act_once(stack: Stack,
                                                        client: httpx.Client) -> None:
    for _ in range(3):
        # Given a waiting step followed by a step that counts its runs
        job_id = client.post("/v1/jobs", json={"intent": "debug.plan", "inputs": {"steps": [
            {"intent": "debug.wait", "inputs": {}}, COUNTED_LINK]}},
            headers={"Idempotency-Key": uuid.uuid4().hex}).json()["job_id"]
        url = wait_status(client, job_id, "waiting")["pending"]["resume_url"]
        # When fifty outside calls resume it at the same moment
        with httpx.Client(timeout=30) as caller:
            codes = _race([functools.partial(caller.post, url, json={"n": n})
                           for n in range(RACERS)])
        # Then exactly one is accepted, and the next step runs once
        assert sorted(codes) == [200] + [404] * (RACERS - 1), codes
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["steps"][1]["output"] in [{"n": n} for n in range(RACERS)]
        assert runs(stack, job_id, 2) == 1


def test_fifty_concurrent_approvals_of_one_token_act_once(stack: Stack,
                                                          client: httpx.Client) -> None:
    for _ in range(3):
        # Given a held step followed by a step that counts its runs
        job_id = client.post("/v1/jobs", json={"intent": "debug.plan", "inputs": {"steps": [
            {"intent": "debug.hold", "inputs": {"reason": "race"}}, COUNTED_LINK]}},
            headers={"Idempotency-Key": uuid.uuid4().hex}).json()["job_id"]
        token = wait_status(client, job_id, "awaiting_approval")["pending"]["token"]
        # When fifty calls approve it at the same moment
        approve = functools.partial(client.post, f"/v1/jobs/{job_id}/approve",
                                    json={"token": token})
        codes = _race([approve] * RACERS)
        # Then exactly one is accepted; the others are told it is no longer held
        assert sorted(codes) == [200] + [409] * (RACERS - 1), codes
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert [e["type"] for e in events_of(client, job_id)].count("step_approved") == 1
        assert runs(stack, job_id, 2) == 1
