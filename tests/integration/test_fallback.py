"""Prompts without a model (no LLM_API_KEY, the embedded default): the rule-based planner."""

import time

import httpx

from tests.integration.conftest import Stack, wait_job


def submit(client: httpx.Client, prompt: str) -> dict:  # type: ignore[type-arg]
    answer = client.post("/v1/jobs", json={"prompt": prompt, "inputs": {"namespace": "ns"}})
    assert answer.status_code == 202, answer.text
    return wait_job(client, answer.json()["job_id"])


def test_without_a_model_a_prompt_gets_a_plain_answer_that_says_so(client: httpx.Client) -> None:
    job = submit(client, "tell me a joke")
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["fallback"] is True
    assert "no model is configured (LLM_API_KEY is not set)" in job["result"]["response"]
    assert [s["intent"] for s in job["steps"]] == ["llm.plan", "llm.respond"]


def test_a_search_prompt_runs_a_memory_search_through_the_fallback(
        client: httpx.Client) -> None:
    # Given no model: the rule-based planner maps "search …" to memory.search
    job = submit(client, "search for recent SSH attacks")
    # Then the search ran as a step and the answer says so, and that the fallback answered
    assert job["status"] == "succeeded", job["error"]
    assert "memory.search" in [s["intent"] for s in job["steps"]]
    assert job["result"]["response"].startswith("The rule-based planner answered because")
    assert "Found no notes" in job["result"]["response"]


def test_ready_says_the_rule_based_planner_is_active(stack: Stack) -> None:
    planner = httpx.get(f"{stack.url}/ready").json()["checks"]["planner"]
    assert planner["planner"] == "rule-based" and "LLM_API_KEY" in planner["reason"]


def _reviewed(client: httpx.Client, note: str) -> tuple[str, dict]:  # type: ignore[type-arg]
    """A prompt sent for review: its job stops after planning, the plan held."""
    answer = client.post("/v1/jobs", json={"prompt": f"Remember this note: {note}",
                                           "inputs": {"namespace": "review", "review": True}})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    deadline = time.monotonic() + 20
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != "awaiting_approval":
        assert time.monotonic() < deadline and job["status"] not in ("succeeded", "failed"), job
        time.sleep(0.05)
    return job_id, job


def test_a_plan_sent_for_review_runs_only_once_approved(client: httpx.Client) -> None:
    # Given a prompt sent with review: its whole plan is held before any planned step runs
    job_id, job = _reviewed(client, "the reviewed fact is 42")
    held = job["pending"]
    assert held["intent"] == "llm.review" and "1. memory.write" in held["reason"]
    assert held["inputs"]["steps"][0]["intent"] == "memory.write"
    assert [s["status"] for s in job["steps"][2:]] == ["pending", "pending"]
    # When the plan is approved with its token
    approved = client.post(f"/v1/jobs/{job_id}/approve", json={"token": held["token"]})
    assert approved.status_code == 200, approved.text
    # Then the planned steps run and the answer says what they did
    done = wait_job(client, job_id)
    assert done["status"] == "succeeded", done["error"]
    assert [s["intent"] for s in done["steps"]] == [
        "llm.plan", "llm.review", "memory.write", "llm.respond"]
    assert done["steps"][2]["status"] == "succeeded"


def test_a_rejected_plan_runs_none_of_its_steps(client: httpx.Client) -> None:
    job_id, _ = _reviewed(client, "this note is never stored")
    rejected = client.post(f"/v1/jobs/{job_id}/reject", json={"reason": "not now"})
    assert rejected.status_code == 200, rejected.text
    job = wait_job(client, job_id)
    assert job["status"] == "failed" and "not now" in job["error"]
    assert [s["status"] for s in job["steps"][2:]] == ["cancelled", "cancelled"] or all(
        s["status"] != "succeeded" for s in job["steps"][2:])
