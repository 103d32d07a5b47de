"""Prompts through real workers against a scripted OpenAI-compatible server on loopback."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.conftest import Stack, running_stack, wait_job
from tests.integration.llm_server import Reply, Script, plan, scripted_llm

ECHO = {"intent": "debug.echo", "inputs": {"results": [1, 2]}, "why": "look"}
USE = {"intent": "debug.echo", "inputs": {"got": {"$ref": "steps.1.output.results"}},
       "why": "use it"}
SYNC_TIMEOUT = 3
LLM_TIMEOUT = 6


@pytest.fixture(scope="module")
def llm_server() -> Iterator[tuple[str, Script]]:
    with scripted_llm() as (server, script):
        yield server.url, script


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def llm_stack(request: pytest.FixtureRequest,
              llm_server: tuple[str, Script]) -> Iterator[Stack]:
    """A stack whose model is the scripted server; its breaker opens after 2 failed calls."""
    env = {"LLM_BASE_URL": f"{llm_server[0]}/v1", "LLM_API_KEY": "test-key",
           "LLM_MODEL": "scripted", "LLM_PRICES": '{"scripted": {"prompt": 1, "completion": 2}}',
           "BREAKER_FAIL_MAX": "2", "BREAKER_RESET_TIMEOUT": "30", "RETRY_INITIAL": "0.01",
           "RETRY_MAXIMUM": "0.05", "ORCHESTRATOR_SYNC_TIMEOUT": str(SYNC_TIMEOUT),
           "LLM_TIMEOUT": str(LLM_TIMEOUT), "LLM_CONTEXT_TOKENS": "4096"}
    db_index = 3 if request.param == "sqlite" else 4
    with running_stack(request, request.param, db_index, env, name="llm",
                       split_workers=False) as running:
        yield running


@pytest.fixture
def script(llm_server: tuple[str, Script]) -> Script:
    llm_server[1].set()
    return llm_server[1]


@pytest.fixture
def http(llm_stack: Stack) -> Iterator[httpx.Client]:
    with llm_stack.client() as client:
        yield client


def events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/jobs/{job_id}/events").json())


def prompt(client: httpx.Client, text: str, **inputs: Any) -> dict[str, Any]:
    answer = client.post("/v1/jobs", json={"prompt": text, "inputs": inputs})
    assert answer.status_code == 202, answer.text
    return wait_job(client, answer.json()["job_id"])


def test_a_prompt_becomes_a_plan_whose_steps_run_on_their_pools_then_a_streamed_answer(
        http: httpx.Client, script: Script) -> None:
    # Given a model that plans two echo steps, the second using the first's output
    script.set(plans=[plan(ECHO, USE)], answers=[Reply("The echo said one and two.")])
    # When a prompt is submitted
    job = prompt(http, "echo something")
    # Then the plan ran, each step on its pool, and the answer is the model's
    assert job["status"] == "succeeded", job["error"]
    assert [(s["intent"], s["pool"]) for s in job["steps"]] == [
        ("llm.plan", "llm"), ("debug.echo", "tools"), ("debug.echo", "tools"),
        ("llm.respond", "llm")]
    assert job["steps"][2]["output"] == {"got": [1, 2]}
    assert job["result"]["response"].startswith("The echo said one and two.")
    assert job["result"]["fallback"] is False
    # and it lists what it used
    assert job["result"]["response"].endswith('Used: debug.echo: "{"results": [1, 2]}"; '
                                              'debug.echo: "{"got": [1, 2]}".')
    assert job["steps"][0]["output"]["prompt"]["measured"] == [100]
    # and the answer's outputs reached the model, tokens and cost are summed per job
    assert '"got": [1, 2]' in script.requests[-1]["messages"][0]["content"]
    assert job["usage"]["prompt_tokens"] == 200 and job["usage"]["completion_tokens"] == 40
    assert job["usage"]["cost"] == pytest.approx((200 * 1 + 40 * 2) / 1e6)
    # and the plan is an event, the answer arrived as deltas
    log = events(http, job["job_id"])
    created = next(e for e in log if e["type"] == "plan_created")
    assert [s["why"] for s in created["data"]["steps"]] == ["look", "use it"]
    deltas = "".join(e["data"]["text"] for e in log if e["type"] == "llm_delta")
    assert deltas == job["result"]["response"]


def test_the_planner_is_asked_with_a_json_schema_of_the_tenants_intents(
        http: httpx.Client, script: Script) -> None:
    prompt(http, "hello")
    asked = script.requests[0]
    assert asked["response_format"]["type"] == "json_schema"
    names = asked["response_format"]["json_schema"]["schema"]["properties"]["steps"]["items"][
        "properties"]["intent"]["enum"]
    assert "debug.echo" in names and not any(n.startswith("llm.") for n in names)
    assert "debug.echo" in asked["messages"][0]["content"]


def test_a_malformed_plan_is_repaired_in_one_more_round(http: httpx.Client,
                                                        script: Script) -> None:
    # Given a model whose first plan is not JSON
    script.set(plans=[Reply("sure! here is a plan"), plan(ECHO)])
    job = prompt(http, "echo")
    # Then the second round's plan ran, and the model was told what was wrong
    assert job["status"] == "succeeded", job["error"]
    assert [s["intent"] for s in job["steps"]][1] == "debug.echo"
    assert "That plan is invalid" in script.requests[1]["messages"][-1]["content"]


def test_two_invalid_plans_fall_back_to_the_rule_based_planner_with_usage_kept(
        http: httpx.Client, script: Script) -> None:
    # Given a model that keeps planning an intent that does not exist
    script.set(plans=[plan({"intent": "no.such", "inputs": {}, "why": "?"})])
    job = prompt(http, "search for the door code")
    # Then after two rounds the rule-based planner answered, saying why in plain words
    assert job["status"] == "succeeded", job["error"]
    assert len(script.requests) == 2
    result = job["result"]
    assert result["fallback"] is True and result["planner"] == "rule-based"
    assert result["response"].startswith(
        "The rule-based planner answered because the model did not give a usable plan in 2 "
        "tries (Intent 'no.such' not found).")
    assert "memory.search" in [s["intent"] for s in job["steps"]]
    assert "PlanRejected" not in result["response"] and "step 0" not in result["response"]
    # and the model's plan is in the plan_rejected event only
    rejected = [e for e in events(http, job["job_id"]) if e["type"] == "plan_rejected"]
    assert "no.such" in rejected[0]["data"]["plan"] and "{" not in result["response"]
    # and both calls are in the job's usage
    assert job["usage"]["calls"] == 2 and job["usage"]["prompt_tokens"] == 200


def test_a_model_timeout_falls_back_and_its_seconds_are_counted(
        llm_stack: Stack, http: httpx.Client, script: Script) -> None:
    # Given a model slower than LLM_TIMEOUT on every plan
    script.set(plans=[Reply(json.dumps({"steps": []}), delay=LLM_TIMEOUT + 1)])
    try:
        job = wait_job(http, http.post("/v1/jobs", json={"prompt": "hello"}).json()["job_id"],
                       timeout=60)
        # Then the rule-based planner answered, saying the model did not answer in time
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["fallback"] is True
        assert (f"the model did not answer within {LLM_TIMEOUT} seconds"
                in job["result"]["response"])
        # and the calls that timed out are in the usage, with the seconds waited
        assert job["usage"]["calls"] >= 1
        assert job["usage"]["model_seconds"] >= LLM_TIMEOUT
    finally:
        with llm_stack.client(llm_stack.new_key(operator=True)) as operator:
            operator.post("/v1/breakers/llm/reset")


def test_a_prompt_too_long_for_the_models_context_is_a_422(http: httpx.Client) -> None:
    answer = http.post("/v1/jobs", json={"prompt": "word " * 4000})
    assert answer.status_code == 422, answer.text
    assert "LLM_CONTEXT_TOKENS" in answer.text and "shorten it" in answer.text
    chat = http.post("/chat", json={"message": "word " * 4000})
    assert chat.status_code == 422


def test_bad_inputs_in_a_plan_are_replanned(http: httpx.Client, script: Script) -> None:
    bad = {"intent": "debug.sleep", "inputs": {"seconds": "long"}, "why": "wait"}
    script.set(plans=[plan(bad), plan(ECHO)])
    job = prompt(http, "wait a bit")
    assert job["status"] == "succeeded", job["error"]
    assert "inputs.seconds" in script.requests[1]["messages"][-1]["content"]


def test_500s_open_the_breaker_and_the_rule_based_planner_answers(
        llm_stack: Stack, http: httpx.Client, script: Script) -> None:
    # Given a model server that fails every call
    script.set(plans=[Reply(status=500)], answers=[Reply(status=500)])
    try:
        # When prompts arrive
        jobs = [prompt(http, f"hello there {n}") for n in range(3)]
        # Then each is answered by the fallback, saying so, and never crashes
        for job in jobs:
            assert job["status"] == "succeeded", job["error"]
            assert job["result"]["fallback"] is True
            assert job["result"]["response"].startswith("The rule-based planner answered")
        # and after two failed calls the breaker is open: the third did not call the model
        assert "circuit breaker is open" in jobs[2]["result"]["fallback_reason"]
        assert "HTTP 500" in jobs[0]["result"]["response"]
        assert len(script.requests) == 2 * 3
        ready = httpx.get(f"{llm_stack.url}/ready").json()
        assert ready["checks"]["planner"]["planner"] == "rule-based"
    finally:
        with llm_stack.client(llm_stack.new_key(operator=True)) as operator:
            operator.post("/v1/breakers/llm/reset")


def test_chat_answers_in_reference_000s_shape_and_keeps_the_session(
        llm_stack: Stack, http: httpx.Client, script: Script) -> None:
    # Given a first message in a session
    script.set(plans=[plan(ECHO)], answers=[Reply("First answer."), Reply("Second answer.")])
    first = http.post("/chat", json={"message": "hi", "twin_id": "twin-1",
                                     "session_id": "s-1", "namespace": "ns"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) >= {"response", "job_id", "actions_taken", "status"}
    assert body["status"] == "completed" and body["response"].startswith("First answer.")
    assert body["actions_taken"] == ["debug.echo: 2 results"]
    # When a second message follows in the same session
    second = http.post("/chat", json={"message": "and again?", "session_id": "s-1"}).json()
    assert second["status"] == "completed"
    # Then the planner saw the first turn, and the session holds every message
    planned = script.requests[2]["messages"]
    assert [m["content"] for m in planned[1:3]] == ["hi", body["response"]]
    messages = http.get("/v1/sessions/s-1/messages").json()
    assert messages["twin_id"] == "twin-1" and messages["namespace"] == "ns"
    assert [m["role"] for m in messages["messages"]] == [
        "user", "tool", "assistant", "user", "tool", "assistant"]
    # and another tenant does not see it
    with llm_stack.client() as other:
        assert other.get("/v1/sessions/s-1/messages").status_code == 404


def test_v1_chat_answers_and_a_slow_model_answers_accepted(http: httpx.Client,
                                                          script: Script) -> None:
    done = http.post("/v1/chat", json={"prompt": "hello", "user_id": "u-1",
                                       "metadata": {"source": "n8n"}}).json()
    assert done["status"] == "completed" and done["response"]
    # Given a model slower than the sync timeout
    script.set(plans=[Reply(json.dumps({"steps": []}), delay=SYNC_TIMEOUT + 1)])
    slow = http.post("/v1/chat", json={"prompt": "take your time"}).json()
    # Then the answer is `accepted` with the job, which ends later
    assert slow["status"] == "accepted" and slow["response"] == ""
    assert wait_job(http, slow["job_id"])["status"] == "succeeded"


def test_the_websocket_streams_each_messages_events_and_answer(
        llm_stack: Stack, script: Script) -> None:
    key = llm_stack.new_key()
    url = llm_stack.url.replace("http://", "ws://") + "/v1/chat/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
        for text in ("one", "two"):
            socket.send(json.dumps({"message": text, "session_id": "ws-1"}))
            seen = []
            while (message := json.loads(socket.recv(timeout=30)))["type"] != "answer":
                seen.append(message["type"])
            assert seen[0] == "accepted" and "llm_delta" in seen and "job_succeeded" in seen
            assert message["status"] == "completed" and message["response"]
    # a bad key: accepted, then closed with 4401
    with pytest.raises(ConnectionClosed) as closed, connect(url) as socket:
        socket.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_one_websocket_keeps_one_session(llm_stack: Stack, http: httpx.Client,
                                         script: Script) -> None:
    key = llm_stack.new_key()
    url = llm_stack.url.replace("http://", "ws://") + "/v1/chat/ws"
    sessions = []
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
        for text in ("one", "two"):
            socket.send(json.dumps({"message": text}))
            while (message := json.loads(socket.recv(timeout=30)))["type"] != "answer":
                pass
            sessions.append(message["session_id"])
    assert sessions[0] == sessions[1]
    with llm_stack.client(key) as owner:
        messages = owner.get(f"/v1/sessions/{sessions[0]}/messages").json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["one", "two"]


def test_llm_routes_ask_the_configured_server(http: httpx.Client, script: Script) -> None:
    models = http.get("/v1/llm/models").json()
    assert models["models"] == ["scripted"] and models["model"] == "scripted"
    check = http.post("/v1/llm/test-connection").json()
    assert check["ok"] is True and check["planner"]["planner"] == "llm"


def test_the_sse_stream_shows_the_answer_as_it_is_written(http: httpx.Client,
                                                         script: Script) -> None:
    script.set(answers=[Reply("a b c d e f g h i j k l m n o p")])
    job_id = http.post("/v1/jobs", json={"prompt": "stream"}).json()["job_id"]
    kinds = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events",
                     headers={"Accept": "text/event-stream"}) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
    assert "llm_delta" in kinds and kinds.index("llm_delta") < kinds.index("job_succeeded")


def test_a_slow_model_does_not_hold_other_prompts(http: httpx.Client, script: Script) -> None:
    script.set(plans=[Reply(json.dumps({"steps": []}), delay=1)])
    started = time.monotonic()
    ids = [http.post("/v1/jobs", json={"prompt": f"p{n}"}).json()["job_id"] for n in range(4)]
    assert all(wait_job(http, i)["status"] == "succeeded" for i in ids)
    assert time.monotonic() - started < 4  # the llm pool's threads wait concurrently
