"""MCP servers (the official `mcp` SDK, 2.x): list a server's tools, call one.

A server is a stdio command or a streamable-HTTP URL from settings (operator-trusted). Each
call opens its own session (a subprocess for stdio), so a worker thread never shares a
connection; the server's breaker guards every call.
"""

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp_types import TextContent
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import OrchestratorError, UpstreamError
from core.settings import McpSettings


class McpServerSpec(BaseModel):
    """An MCP server from settings: how to reach it and who may use its tools."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Intent prefix part.")
    command: list[str] | None = Field(None, min_length=1, description="argv of a stdio server.")
    url: str | None = Field(None, description="Streamable-HTTP endpoint, e.g. http://h/mcp.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (stdio).")
    tenants: list[str] | None = Field(None, description="Tenant ids allowed; null: all.")
    timeout: float | None = Field(None, gt=0, description="Seconds per call (else MCP_TIMEOUT).")

    @model_validator(mode="after")
    def _one_transport(self) -> "McpServerSpec":
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server {self.name}: give exactly one of command or url")
        return self

    @property
    def upstream(self) -> str:
        return f"mcp:{self.name}"


@dataclass(frozen=True)
class McpTool:
    """A tool a server listed."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool = False
    """The server's `annotations.readOnlyHint` (absent: it may write)."""


class McpToolError(OrchestratorError):
    """Raised when a tool answered with an error (the server works; not retried)."""

    status_code = 502


def load_servers(settings: McpSettings) -> list[McpServerSpec]:
    if not settings.servers_file:
        return []
    return TypeAdapter(list[McpServerSpec]).validate_json(
        Path(settings.servers_file).read_bytes())


def _client(spec: McpServerSpec) -> Client:
    if spec.command is not None:
        params = StdioServerParameters(command=spec.command[0], args=spec.command[1:],
                                       env={**os.environ, **spec.env})
        return Client(params)
    assert spec.url is not None
    return Client(spec.url)


async def _list(spec: McpServerSpec) -> list[McpTool]:
    async with _client(spec) as client:
        listed = await client.list_tools()
    return [McpTool(t.name, t.description or "", dict(t.input_schema), _read_only(t))
            for t in listed.tools]


def _read_only(tool: Any) -> bool:
    annotations = getattr(tool, "annotations", None)
    return bool(annotations is not None and annotations.read_only_hint)


async def _call(spec: McpServerSpec, tool: str, arguments: dict[str, Any]) -> Any:
    async with _client(spec) as client:
        result = await client.call_tool(tool, arguments)
    texts = [item.text for item in result.content if isinstance(item, TextContent)]
    if result.is_error:
        raise McpToolError(f"MCP tool {spec.name}.{tool} failed: {' '.join(texts)[:2000]}")
    if result.structured_content is not None:
        return result.structured_content
    return {"content": texts}


def _run(coroutine: Any, spec: McpServerSpec, timeout: float) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coroutine, timeout))
    except TimeoutError as exc:
        raise UpstreamError(spec.upstream, f"no answer within {timeout:g}s") from exc
    except McpToolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any transport failure is the server's trouble
        raise UpstreamError(spec.upstream, f"{type(exc).__name__}: {exc}"[:500]) from exc


def list_tools(spec: McpServerSpec, timeout: float) -> list[McpTool]:
    """The server's tools (`tools/list`)."""
    result: list[McpTool] = _run(_list(spec), spec, timeout)
    return result


def call_tool(spec: McpServerSpec, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
    """Call one tool: its structured content, or its text content; a tool error raises."""
    return _run(_call(spec, tool, arguments), spec, timeout)


class McpClient(Upstream):
    """Calls the configured MCP servers' tools, each through its server's breaker (no retry:
    a tool call may have acted)."""

    def __init__(self, breakers: Breakers) -> None:
        super().__init__(breakers, None)

    def call(self, spec: McpServerSpec, tool: str, arguments: dict[str, Any],
             timeout: float) -> Any:
        return self.guarded(spec.upstream, lambda: call_tool(spec, tool, arguments, timeout))
