"""An MCP server that does not start: one clear error, a closed breaker, and `/ready` says so."""

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pybreaker
import pytest
import redis

from adapters import mcp
from adapters.breakers import Breakers
from core.settings import BreakerSettings, McpSettings
from tasks.mcp import discover, discovery
from tests.integration.conftest import Stack

BROKEN = ["python", "-m", "mcp_server_nope"]


@pytest.fixture
def client(broker_url: str) -> Iterator[redis.Redis]:
    """A private Redis database (8), empty at the start of each test."""
    with redis.Redis.from_url(broker_url.rsplit("/", 1)[0] + "/8") as connection:
        connection.flushdb()
        yield connection


def test_a_server_that_does_not_start_never_opens_its_breaker(client: redis.Redis) -> None:
    # Given a breaker that opens after two failures and a server that cannot start
    breakers = Breakers(client, BreakerSettings(fail_max=2, reset_timeout=60))
    caller = mcp.McpClient(breakers)
    broken = mcp.McpServerSpec(name="time", command=BROKEN)
    # When it is called more often than the breaker tolerates
    for _ in range(4):
        with pytest.raises(mcp.McpServerDidNotStart, match="No module named mcp_server_nope"):
            caller.call(broken, "get_current_time", {}, timeout=30)
    # Then every call says why, and the breaker stays closed with no failure counted
    (state,) = breakers.states()
    assert state["state"] == pybreaker.STATE_CLOSED and state["failures"] == 0


def test_discovery_keeps_each_servers_last_outcome(client: redis.Redis, tmp_path: Path) -> None:
    # Given one server that works and one that does not start
    listed = tmp_path / "mcp-servers.json"
    listed.write_text(json.dumps([
        {"name": "time", "command": [sys.executable, "-m", "mcp_server_time"]},
        {"name": "broken", "command": BROKEN}]))
    settings = McpSettings(servers_file=str(listed))
    assert discovery(client, settings)["time"]["status"] == "pending"
    # When a tools worker discovers their tools
    assert discover(client, settings) == 1
    # Then each server's outcome is kept for /ready
    found = discovery(client, settings)
    assert found["time"]["status"] == "ok" and found["time"]["tools"] >= 2
    assert found["broken"]["status"] == "failed"
    assert found["broken"]["error"] == (
        "MCP server 'broken' did not start: No module named mcp_server_nope")


def test_ready_shows_each_mcp_servers_discovery(stack: Stack) -> None:
    # Given the stack's tools workers, which discover the servers' tools when they start
    deadline = time.monotonic() + 30
    while (anonymous := httpx.get(f"{stack.url}/ready").json()["checks"]["mcp"])[
            "time"]["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.3)
    operator = httpx.get(f"{stack.url}/ready", headers={
        "Authorization": f"Bearer {stack.new_key(operator=True)}"}).json()["checks"]["mcp"]
    assert anonymous["time"]["status"] == "ok" and "error" not in anonymous["time"]
    assert operator["time"]["status"] == "ok" and operator["time"]["error"] is None
    assert set(operator) == {"time", "local", "secret"}
