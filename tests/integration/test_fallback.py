"""Prompts without a model (no LLM_API_KEY, the embedded default): the rule-based planner."""

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
    assert "memory.search: 0 results" in job["result"]["response"]


def test_ready_says_the_rule_based_planner_is_active(stack: Stack) -> None:
    planner = httpx.get(f"{stack.url}/ready").json()["checks"]["planner"]
    assert planner["planner"] == "rule-based" and "LLM_API_KEY" in planner["reason"]
