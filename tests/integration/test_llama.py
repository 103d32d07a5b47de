"""A prompt through the whole stack against a real llama.cpp server and a real (tiny) model.

SmolLM2-135M's answers are weak: this checks the protocol (a `json_schema` plan that
validates, a streamed answer, usage), not the wisdom.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tasks.budget import REPAIR_TOKENS
from tests.integration.conftest import Stack, running_stack, wait_job
from tests.integration.llama import MODEL, llama_server


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def llama_stack(request: pytest.FixtureRequest, llama_url: str) -> Iterator[Stack]:
    env = {"LLM_BASE_URL": llama_url, "LLM_API_KEY": "none", "LLM_MODEL": MODEL,
           "LLM_PLAN_INTENTS": '["debug.echo"]', "LLM_MAX_PLAN_STEPS": "1",
           "LLM_MAX_TOKENS": "96", "LLM_TIMEOUT": "120", "LLM_TEMPERATURE": "0",
           "POOL_SOFT_TIME_LIMIT": "200", "POOL_TIME_LIMIT": "210",
           "BROKER_VISIBILITY_TIMEOUT": "300"}
    db_index = 5 if request.param == "sqlite" else 6
    with running_stack(request, request.param, db_index, env, name="llama",
                       split_workers=False) as running:
        yield running


def test_a_prompt_gets_a_valid_plan_and_a_streamed_answer_from_llama_cpp(
        llama_stack: Stack) -> None:
    with llama_stack.client() as client:
        # Given a prompt (the model may plan an echo step, or none)
        job_id = client.post("/v1/jobs", json={
            "prompt": "Echo the word hello.", "inputs": {"session_id": "llama"}}).json()["job_id"]
        # When it runs through the planner and the answer
        job = wait_job(client, job_id, timeout=240)
        # Then the model's plan validated (no repair needed to fail) and ran, then an answer
        assert job["status"] == "succeeded", job["error"]
        plan = job["steps"][0]["output"]
        assert plan["planner"] == "llm" and plan["fallback"] is False
        assert all(s["intent"] == "debug.echo" for s in plan["steps"])
        assert job["steps"][-1]["intent"] == "llm.respond"
        assert job["result"]["fallback"] is False and job["result"]["response"].strip()
        assert job["usage"]["calls"] >= 2 and job["usage"]["completion_tokens"] > 0
        events = client.get(f"/v1/jobs/{job_id}/events").json()
        deltas = "".join(e["data"]["text"] for e in events if e["type"] == "llm_delta")
        assert deltas == job["result"]["response"]


CONTEXT = 2048  # the slot's context (llama.py: n_ctx 4096 over 2 slots), learned from /props
MAX_TOKENS = 48  # a plan cut short is invalid: the fallback answers, as it must
SEEDS = ["Search for recent SSH attacks", "Analyze customer churn",
         "Search my notes: when does the nightly backup run?"]
INTERNAL = ("Traceback", "PlanRejected", "step 0", "Error:", "upstream llm")


@pytest.fixture(scope="module")
def small_stack(request: pytest.FixtureRequest, llama_url: str) -> Iterator[Stack]:
    """Every built-in intent offered to a 2,048-token model; the context from the server."""
    env = {"LLM_BASE_URL": llama_url, "LLM_API_KEY": "none", "LLM_MODEL": MODEL,
           "LLM_MAX_TOKENS": str(MAX_TOKENS), "LLM_TIMEOUT": "120", "LLM_TEMPERATURE": "0",
           "POOL_SOFT_TIME_LIMIT": "200", "POOL_TIME_LIMIT": "210",
           "BROKER_VISIBILITY_TIMEOUT": "300"}
    with running_stack(request, "sqlite", 7, env, name="llama-small",
                       split_workers=False) as running:
        yield running


def ask(client: httpx.Client, text: str, session_id: str) -> dict[str, Any]:
    answer = client.post("/v1/jobs", json={"prompt": text, "inputs": {"session_id": session_id}})
    assert answer.status_code == 202, answer.text
    job = wait_job(client, answer.json()["job_id"], timeout=400)
    # never a failed job, never internal error text in the answer
    assert job["status"] == "succeeded", job["error"]
    response = job["result"]["response"]
    assert response.strip() and not any(word in response for word in INTERNAL), response
    # and the planning prompt the server measured stayed within the plan's budget (the repair
    # round, with the rejected plan and the error, within the room kept for it)
    prompt = job["steps"][0]["output"]["prompt"]
    assert prompt is not None and prompt["budget"] + MAX_TOKENS < CONTEXT
    assert prompt["measured"] and prompt["measured"][0] <= prompt["budget"], prompt
    assert max(prompt["measured"]) <= prompt["budget"] + REPAIR_TOKENS, prompt
    return job


@pytest.mark.timeout(1500)  # a tiny model, but on 2 shared cores each plan takes seconds
def test_the_readme_chat_examples_answer_from_a_2048_token_model(small_stack: Stack) -> None:
    with small_stack.client() as client:
        intents = client.get("/v1/intents").json()
        for text in SEEDS:
            ask(client, text, "seeds")
    assert len(intents) > 10


@pytest.mark.timeout(900)
def test_a_remembered_fact_is_recalled_in_the_answer(small_stack: Stack) -> None:
    with small_stack.client() as client:
        ask(client, "Remember that the nightly backup runs at 2am on db01.", "backup")
        job = ask(client, "When does the nightly backup run?", "backup")
        assert "2am" in job["result"]["response"], job["result"]
