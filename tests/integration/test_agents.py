"""External agents over SSE (reference 003), with a real loopback agent and real workers."""

from collections.abc import Iterator

import httpx
import pytest

from tests.integration import agent_server
from tests.integration.conftest import Stack, wait_job


@pytest.fixture
def agent() -> Iterator[agent_server.Agent]:
    with agent_server.serve() as running:
        yield running


def register(client: httpx.Client, url: str, agent_id: str = "helper") -> httpx.Response:
    return client.post("/v1/agents/register", json={"agent_id": agent_id, "name": "Helper",
                                                     "endpoint": url})


def test_a_registered_agent_streams_its_answer_as_job_events_in_order(
        agent: agent_server.Agent, client: httpx.Client) -> None:
    # Given an agent registered by this tenant
    registered = register(client, agent.url)
    assert registered.status_code == 201, registered.text
    assert registered.json()["intent"] == "agent.helper"
    # When it is invoked the reference 003 way
    run = client.post("/internal/invoke", json={
        "agent_id": "helper", "session_id": "sess_1",
        "input_message": {"role": "user", "content": "world"}})
    assert run.status_code == 202, run.text
    run_id = run.json()["run_id"]
    assert run.json()["session_id"] == "sess_1"
    # Then the run ends with the agent's final message
    job = wait_job(client, run_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["final_message"] == "Hello, world!"
    assert job["result"]["usage"] == {"tokens": 4}
    assert agent.invoked[0]["run_id"] == run_id and agent.invoked[0]["session_id"] == "sess_1"
    # And the deltas are job events, in order, between started and done
    events = client.get(f"/v1/jobs/{run_id}/events").json()
    agent_events = [e for e in events if e["type"].startswith("agent_")]
    assert [e["type"] for e in agent_events] == (
        ["agent_invoke_started"] + ["agent_stream_delta"] * 4 + ["agent_invoke_done"])
    assert "".join(e["data"]["text"] for e in agent_events[1:-1]) == "Hello, world!"
    # And the run's transcript is in its chat session, as chat keeps one
    transcript = client.get("/v1/sessions/sess_1/messages").json()["messages"]
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("user", "world"), ("tool", "agent.helper: answered"), ("assistant", "Hello, world!")]
    # And the replay names the run's lifecycle as reference 003 does
    replay = [e["type"] for e in client.get(f"/v1/runs/{run_id}/events").json()]
    assert replay[0] == "job_queued" and "run_started" in replay and replay[-1] == "run_done"


def test_a_stream_that_breaks_off_is_tried_again(agent: agent_server.Agent,
                                                 client: httpx.Client) -> None:
    agent.drops = 1
    register(client, agent.url)
    job = wait_job(client, client.post("/v1/jobs", json={
        "intent": "agent.helper",
        "inputs": {"input_message": {"content": "again"}}}).json()["job_id"])
    assert job["status"] == "succeeded" and job["result"]["final_message"] == "Hello, again!"
    deltas = [e["data"] for e in client.get(f"/v1/jobs/{job['job_id']}/events").json()
              if e["type"] == "agent_stream_delta"]
    assert [d["attempt"] for d in deltas] == [1, 1, 2, 2, 2, 2]


def test_an_unhealthy_or_private_endpoint_is_not_registered(agent: agent_server.Agent,
                                                            client: httpx.Client) -> None:
    missing = register(client, f"{agent.url}/nothing-here")
    assert missing.status_code == 422 and "GET /health answered 404" in missing.json()["error"]
    private = register(client, "http://10.1.2.3:8000")
    assert private.status_code == 422 and "private" in private.json()["error"]


def test_a_tenant_never_sees_another_tenants_agents(
        stack: Stack, agent: agent_server.Agent, client: httpx.Client) -> None:
    register(client, agent.url, "mine")
    with stack.client() as stranger:
        assert stranger.get("/v1/agents").json() == []
        assert "agent.mine" not in [i["name"] for i in stranger.get("/v1/intents").json()]
        refused = stranger.post("/internal/invoke", json={
            "agent_id": "mine", "input_message": {"content": "x"}})
        assert refused.status_code == 404
        assert stranger.delete("/v1/agents/mine").status_code == 404
    assert "agent.mine" in [i["name"] for i in client.get("/v1/intents").json()]
    assert client.delete("/v1/agents/mine").status_code == 204
    assert "agent.mine" not in [i["name"] for i in client.get("/v1/intents").json()]


def test_an_agents_breaker_is_its_tenants_own(agent: agent_server.Agent, stack: Stack,
                                              client: httpx.Client) -> None:
    # Given an agent run by this tenant
    register(client, agent.url)
    job = wait_job(client, client.post("/v1/jobs", json={
        "intent": "agent.helper", "inputs": {"input_message": {"content": "x"}}}).json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    # Then its calls went through the tenant's own breaker for that host and port
    port = agent.url.rsplit(":", 1)[1].split("/")[0]
    [mine] = [b["name"] for b in client.get("/v1/breakers").json()
              if b["name"].startswith("agent:") and b["name"].endswith(f":127.0.0.1:{port}")]
    assert mine.startswith("agent:ten_")
    # And another tenant neither sees nor resets it
    with stack.client() as stranger:
        assert mine not in [b["name"] for b in stranger.get("/v1/breakers").json()]
        assert stranger.post(f"/v1/breakers/{mine}/reset").status_code == 404
