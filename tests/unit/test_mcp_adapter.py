"""MCP servers over stdio that do not depend on PATH, and a server that does not start."""

import sys
from pathlib import Path

import pytest

from adapters import mcp
from adapters.breakers import should_retry
from core.errors import UpstreamError

TIMEOUT = 30


def spec(*command: str) -> mcp.McpServerSpec:
    return mcp.McpServerSpec(name="time", command=list(command))


@pytest.mark.parametrize("python", ["python", "python3"])
def test_python_as_a_command_is_this_interpreter(python: str) -> None:
    assert mcp.stdio_command(spec(python, "-m", "x")) == [sys.executable, "-m", "x"]
    assert mcp.stdio_command(spec("/usr/bin/python3", "-m", "x"))[0] == "/usr/bin/python3"


def test_a_python_server_lists_its_tools_without_python_on_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given a PATH on which there is no python at all
    monkeypatch.setenv("PATH", str(tmp_path))
    # When the real mcp-server-time is listed as `python -m mcp_server_time`
    tools = mcp.list_tools(spec("python", "-m", "mcp_server_time"), TIMEOUT)
    # Then it runs on this interpreter and answers
    assert "get_current_time" in {tool.name for tool in tools}


def test_a_server_that_does_not_start_is_one_clear_error_not_retried() -> None:
    # Given a server whose module is not installed
    # When its tools are listed
    with pytest.raises(mcp.McpServerDidNotStart) as raised:
        mcp.list_tools(spec("python", "-m", "mcp_server_nope"), TIMEOUT)
    # Then the error says which server and why, in its own words
    assert str(raised.value) == "MCP server 'time' did not start: No module named mcp_server_nope"
    # And it is a configuration error: no retry, no strike on the server's breaker
    assert not should_retry(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_command_that_does_not_exist_did_not_start() -> None:
    with pytest.raises(mcp.McpServerDidNotStart,
                       match=r"^MCP server 'time' did not start: no-such-mcp-server: No such "):
        mcp.call_tool(spec("no-such-mcp-server"), "get_current_time", {}, TIMEOUT)


def test_an_http_server_that_is_not_there_is_upstream_trouble() -> None:
    unreachable = mcp.McpServerSpec(name="far", url="http://127.0.0.1:9/mcp")
    with pytest.raises(UpstreamError) as raised:
        mcp.list_tools(unreachable, TIMEOUT)
    assert should_retry(raised.value)
