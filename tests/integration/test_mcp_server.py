"""The orchestrator as an MCP server, driven by the official `mcp` client over HTTP and stdio."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

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
            assert "debug.echo" in tools and "debug.sleep" in tools
            assert tools["debug.sleep"].input_schema["properties"]["seconds"]["type"] == "number"
            answer = await mcp.call_tool("debug.echo", {"hello": "mcp"})
            assert not answer.is_error and answer.structured_content == {"hello": "mcp"}
            failed = await mcp.call_tool("debug.fail", {"message": "no luck"})
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

        assert "agent.privy" in asyncio.run(names(key_of(client)))
        assert "agent.privy" not in asyncio.run(names(stack.new_key()))


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
            assert "debug.echo" in {t.name for t in (await mcp.list_tools()).tools}
            answer = await mcp.call_tool("debug.echo", {"over": "stdio"})
            assert answer.structured_content == {"over": "stdio"}
    asyncio.run(run())
