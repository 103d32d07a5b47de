"""The orchestrator as an MCP server, driven by the official `mcp` client over HTTP and stdio."""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests import services
from tests.integration import agent_server
from tests.integration.conftest import Stack


@asynccontextmanager
async def connect(stack: Stack, key: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with Client(streamable_http_client(f"{stack.url}/mcp", http_client=http),
                      mode="legacy") as client:
        yield client


def key_of(client: httpx.Client) -> str:
    return str(client.headers["authorization"]).split()[1]


async def request(client: Client, method: str, params: dict[str, Any], result: Any) -> Any:
    """Send a Tasks request the high-level client has no method for.

    The SDK's client checks a `tools/call` answer against `CallToolResult` even when the call
    asked for a task (it does not implement Tasks), so that one request goes through its
    dispatcher as sent and is validated here as the `CreateTaskResult` the spec defines.
    """
    if method == "tools/call":
        raw = await client.session._dispatcher.send_raw_request(method, params, {})
        return result.model_validate(raw)
    return await client.session.send_request(_request(method, params), result)


def _request(method: str, params: dict[str, Any]) -> Any:
    kinds = {"tasks/get": types.GetTaskRequest, "tasks/result": types.GetTaskPayloadRequest,
             "tasks/cancel": types.CancelTaskRequest, "tools/call": types.CallToolRequest}
    return kinds[method].model_validate({"method": method, "params": params})


def test_tools_are_the_tenants_intents_and_a_call_returns_the_result(
        stack: Stack, client: httpx.Client) -> None:
    async def run() -> None:
        async with connect(stack, key_of(client)) as mcp:
            assert mcp.server_capabilities.tasks is not None
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            assert "debug_echo" in tools and "debug_sleep" in tools
            assert tools["debug_sleep"].input_schema["properties"]["seconds"]["type"] == "number"
            answer = await mcp.call_tool("debug_echo", {"hello": "mcp"})
            assert not answer.is_error and answer.structured_content == {"hello": "mcp"}
            failed = await mcp.call_tool("debug_fail", {"message": "no luck"})
            assert failed.is_error and "no luck" in failed.content[0].text  # type: ignore[union-attr]
    asyncio.run(run())


def test_a_task_is_the_job_and_survives_an_api_restart(stack: Stack,
                                                       client: httpx.Client) -> None:
    async def create() -> str:
        async with connect(stack, key_of(client)) as mcp:
            created = await request(mcp, "tools/call", {
                "name": "debug.sleep", "arguments": {"seconds": 3}, "task": {"ttl": 60000}},
                types.CreateTaskResult)
            assert created.task.status == "working"
            got = await request(mcp, "tasks/get", {"taskId": created.task.task_id},
                                types.GetTaskResult)
            assert got.status == "working"
            return str(created.task.task_id)

    async def finish(task_id: str) -> types.CallToolResult:
        async with connect(stack, key_of(client)) as mcp:
            deadline = time.monotonic() + 30
            while (await request(mcp, "tasks/get", {"taskId": task_id},
                                 types.GetTaskResult)).status != "completed":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.3)
            result: types.CallToolResult = await request(
                mcp, "tasks/result", {"taskId": task_id}, types.CallToolResult)
            return result

    # Given a task-augmented call: the task is the job
    task_id = asyncio.run(create())
    assert client.get(f"/v1/jobs/{task_id}").json()["intent"] == "debug.sleep"
    # When the API restarts while it runs
    assert stack.api is not None
    stack.api.stop()
    stack.api = services.start_api(stack.env, stack.logs / "api-restarted.log")
    stack.wait_ready()
    # Then a new connection polls it to completion and reads its result
    result = asyncio.run(finish(task_id))
    assert not result.is_error and result.structured_content["slept"] >= 3  # type: ignore[index]


def test_a_held_step_is_input_required_and_a_task_can_be_cancelled(
        stack: Stack, client: httpx.Client) -> None:
    async def run() -> None:
        async with connect(stack, key_of(client)) as mcp:
            created = await request(mcp, "tools/call", {
                "name": "debug.hold", "arguments": {"reason": "asks first"},
                "task": {"ttl": 60000}}, types.CreateTaskResult)
            task_id = created.task.task_id
            deadline = time.monotonic() + 20
            while (got := await request(mcp, "tasks/get", {"taskId": task_id},
                                        types.GetTaskResult)).status != "input_required":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert got.status_message == "asks first"
            cancelled = await request(mcp, "tasks/cancel", {"taskId": task_id},
                                      types.CancelTaskResult)
            assert cancelled.status == "cancelled"
    asyncio.run(run())


def test_mcp_needs_a_key_and_shows_only_the_tenants_tools(stack: Stack,
                                                          client: httpx.Client) -> None:
    assert httpx.post(f"{stack.url}/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                "method": "tools/list"}).status_code == 401
    with agent_server.serve() as agent:
        client.post("/v1/agents/register", json={"agent_id": "privy", "name": "P",
                                                  "endpoint": agent.url})

        async def names(key: str) -> set[str]:
            async with connect(stack, key) as mcp:
                return {t.name for t in (await mcp.list_tools()).tools}

        assert "agent_privy" in asyncio.run(names(key_of(client)))
        assert "agent_privy" not in asyncio.run(names(stack.new_key()))


def test_a_get_on_mcp_answers_405_at_once(stack: Stack, client: httpx.Client) -> None:
    # Given a key (the server has no standalone SSE stream: it is stateless and sends no
    # notifications of its own)
    headers = {"Authorization": f"Bearer {key_of(client)}", "Accept": "text/event-stream"}
    # When a client opens the optional server-to-client stream
    response = httpx.get(f"{stack.url}/mcp", headers=headers, timeout=5)
    # Then it is told at once that only POST is served there, as the transport allows
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"


def test_the_stdio_server_lists_and_calls_the_tenants_tools(stack: Stack,
                                                            client: httpx.Client) -> None:
    params = StdioServerParameters(command=str(services.BIN / "orchestrator"), args=[
        "mcp", "--url", stack.url, "--api-key", key_of(client)], env=stack.env)

    async def run() -> None:
        async with Client(params) as mcp:
            assert "debug_echo" in {t.name for t in (await mcp.list_tools()).tools}
            answer = await mcp.call_tool("debug_echo", {"over": "stdio"})
            assert answer.structured_content == {"over": "stdio"}
    asyncio.run(run())


MCP_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_tool_names_are_ones_clients_accept_and_map_back_to_intents(
        stack: Stack, client: httpx.Client) -> None:
    async def run() -> None:
        async with connect(stack, key_of(client)) as mcp:
            deadline = time.monotonic() + 30
            while "mcp__time__get_current_time" not in (tools := {
                    t.name: t for t in (await mcp.list_tools()).tools}):
                assert time.monotonic() < deadline, sorted(tools)
                await asyncio.sleep(0.3)
            # Then every name is valid, and the intent's own name is its title and _meta
            assert all(MCP_NAME.match(name) for name in tools), sorted(tools)
            search = tools["memory_search"]
            assert search.title == "memory.search"
            assert search.meta == {"orchestrator/intent": "memory.search"}
            assert search.annotations is not None and search.annotations.read_only_hint
            assert tools["mcp__time__get_current_time"].title == "mcp.time.get_current_time"
            # And internal steps are never tools
            assert not {t.title for t in tools.values()} & {
                "llm.plan", "llm.respond", "debug.chain.link"}
            # When a tool is called by its MCP name, the intent runs
            answer = await mcp.call_tool("mcp__time__get_current_time", {"timezone": "UTC"})
            assert not answer.is_error and answer.structured_content is not None
            assert answer.structured_content["timezone"] == "UTC"
            # And an internal step is as unknown as a missing tool
            refused = await mcp.call_tool("llm_respond", {"prompt": "hi"})
            assert refused.is_error and "not found" in refused.content[0].text  # type: ignore[union-attr]
    asyncio.run(run())


def test_a_task_honours_its_requested_ttl_capped_by_the_setting(
        stack: Stack, client: httpx.Client) -> None:
    async def run() -> None:
        async with connect(stack, key_of(client)) as mcp:
            # Given a task asked to live one second, and one asked to live ten days
            short = await request(mcp, "tools/call", {
                "name": "debug_echo", "arguments": {"ttl": uuid.uuid4().hex},
                "task": {"ttl": 1000}}, types.CreateTaskResult)
            long = await request(mcp, "tools/call", {
                "name": "debug_echo", "arguments": {"ttl": uuid.uuid4().hex},
                "task": {"ttl": 10 * 86400 * 1000}}, types.CreateTaskResult)
            # Then the first keeps its ttl, the second is capped by API_MCP_TASK_TTL (a day)
            assert short.task.ttl == 1000 and long.task.ttl == 86400 * 1000
            got = await request(mcp, "tasks/get", {"taskId": short.task.task_id},
                                types.GetTaskResult)
            assert got.ttl == 1000
            # And once its ttl has passed, the short task is gone; the long one is not
            await asyncio.sleep(1.5)
            with pytest.raises(MCPError, match="ttl has passed"):
                await request(mcp, "tasks/get", {"taskId": short.task.task_id},
                              types.GetTaskResult)
            kept = await request(mcp, "tasks/get", {"taskId": long.task.task_id},
                                 types.GetTaskResult)
            assert kept.ttl == 86400 * 1000
    asyncio.run(run())
