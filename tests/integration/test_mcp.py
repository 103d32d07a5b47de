"""MCP tools as intents: the real `mcp-server-time` over stdio and an SDK-built HTTP server."""

import time
import uuid
from typing import Any

import httpx
import redis

from tasks import mcp
from tests.integration.conftest import Stack, wait_job


def mcp_intents(client: httpx.Client, timeout: float = 30) -> dict[str, dict[str, Any]]:
    """The tenant's MCP intents, once the tools workers have discovered them."""
    deadline = time.monotonic() + timeout
    while True:
        found = {i["name"]: i for i in client.get("/v1/intents").json()
                 if i["name"].startswith("mcp.")}
        if len(found) >= 3 or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_discovered_tools_are_intents_of_mode_mcp_with_their_schemas(
        client: httpx.Client) -> None:
    intents = mcp_intents(client)
    assert {"mcp.time.get_current_time", "mcp.time.convert_time", "mcp.local.add",
            "mcp.local.shout"} <= set(intents), sorted(intents)
    current = intents["mcp.time.get_current_time"]
    assert current["mode"] == "mcp" and current["pool"] == "tools"
    assert current["input_schema"]["required"] == ["timezone"]
    assert not any(name.startswith("mcp.secret.") for name in intents)


def test_a_stdio_tool_call_through_a_job_returns_the_time(client: httpx.Client) -> None:
    mcp_intents(client)
    job = client.post("/v1/jobs", json={"intent": "mcp.time.get_current_time",
                                        "inputs": {"timezone": "Europe/Paris"},
                                        "wait": True}).json()
    job = wait_job(client, job["job_id"]) if job["status"] not in ("succeeded", "failed") \
        else job
    assert job["status"] == "succeeded", job["error"]
    assert job["mode"] == "mcp" and job["result"]["timezone"] == "Europe/Paris"
    assert job["result"]["datetime"].startswith(time.strftime("%Y-"))


def test_an_http_tool_call_and_a_tool_error(client: httpx.Client) -> None:
    mcp_intents(client)
    added = wait_job(client, client.post("/v1/jobs", json={
        "intent": "mcp.local.add", "inputs": {"a": 2, "b": 40}}).json()["job_id"])
    assert added["status"] == "succeeded" and added["result"] == {"result": 42}
    failed = wait_job(client, client.post("/v1/jobs", json={
        "intent": "mcp.time.get_current_time",
        "inputs": {"timezone": "Nowhere/Atlantis"}}).json()["job_id"])
    assert failed["status"] == "failed"
    assert "MCP tool time.get_current_time failed" in failed["error"]
    assert failed["steps"][0]["attempts"] == 1


def test_inputs_are_checked_against_the_tools_schema_at_submit(client: httpx.Client) -> None:
    mcp_intents(client)
    refused = client.post("/v1/jobs", json={"intent": "mcp.local.add", "inputs": {"a": 1}})
    assert refused.status_code == 422 and "'b' is a required property" in refused.text


def test_a_tenant_not_allowed_a_server_does_not_see_its_tools(stack: Stack,
                                                              client: httpx.Client) -> None:
    mcp_intents(client)
    refused = client.post("/v1/jobs", json={"intent": "mcp.secret.get_current_time",
                                            "inputs": {"timezone": "UTC"}})
    assert refused.status_code == 404


def test_a_read_only_tool_runs_again_and_a_tool_that_may_write_is_deduplicated(
        client: httpx.Client) -> None:
    # Given the time server's tools (readOnlyHint) and the local server's (no hint)
    intents = mcp_intents(client)
    assert intents["mcp.time.get_current_time"]["effect"] == "read"
    assert intents["mcp.local.add"]["effect"] == "write"
    # When each is called twice with the same inputs, with no Idempotency-Key
    def twice(intent: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [client.post("/v1/jobs", json={"intent": intent, "inputs": inputs,
                                              "wait": True}).json() for _ in range(2)]
    now = twice("mcp.time.get_current_time", {"timezone": "UTC"})
    added = twice("mcp.local.add", {"a": uuid.uuid4().int % 10**9, "b": 1})
    # Then the read ran twice, the write once with the second answer flagged
    assert now[0]["job_id"] != now[1]["job_id"] and not now[1]["deduplicated"]
    assert added[0]["job_id"] == added[1]["job_id"]
    assert added[1]["deduplicated"] is True and added[1]["original_job_id"] == \
        added[0]["job_id"]


def test_the_tools_come_back_when_the_broker_forgets_them(stack: Stack,
                                                          client: httpx.Client) -> None:
    # Given the tools discovered
    assert "mcp.time.get_current_time" in mcp_intents(client)
    # When the broker loses them (a restart without its data), the workers still running
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    broker.delete(mcp.TOOLS_KEY, mcp.DISCOVERY_KEY)
    time.sleep(mcp.CACHE_SECONDS + 0.5)  # past what the API kept of them
    # Then the tools workers publish them again, without a restart
    deadline = time.monotonic() + 30
    while "mcp.time.get_current_time" not in mcp_intents(client, timeout=0):
        assert time.monotonic() < deadline, "the MCP tools never came back"
        time.sleep(0.5)
