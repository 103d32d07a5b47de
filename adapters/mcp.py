"""MCP servers (the official `mcp` SDK, 2.x): list a server's tools, call one.

A server is a stdio command or a streamable-HTTP URL from settings (operator-trusted). Each
call opens its own session (a subprocess for stdio), so a worker thread never shares a
connection; the server's breaker guards every call. `python` or `python3` as a stdio command is
this interpreter, whatever PATH says; a stdio server that exits before it answers is one
`McpServerDidNotStart` naming its own last words, not upstream trouble.
"""

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import TextContent
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import ConfigError, OrchestratorError, UpstreamError
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


class McpServerDidNotStart(ConfigError):
    """Raised when a stdio MCP server's command cannot run or exits before it answers (its
    configuration is wrong: not retried, and no strike on its breaker)."""

    status_code = 502
    expected = True

    def __init__(self, spec: "McpServerSpec", reason: str) -> None:
        super().__init__(f"MCP server '{spec.name}' did not start: {reason}")
        self.upstream = spec.upstream


PYTHONS = ("python", "python3")


def load_servers(settings: McpSettings) -> list[McpServerSpec]:
    if not settings.servers_file:
        return []
    return TypeAdapter(list[McpServerSpec]).validate_json(
        Path(settings.servers_file).read_bytes())


def stdio_command(spec: McpServerSpec) -> list[str]:
    """The argv a stdio server runs: `python`/`python3` first means this interpreter."""
    assert spec.command is not None
    program, *args = spec.command
    return [sys.executable if program in PYTHONS else program, *args]


@dataclass
class _Session:
    """One session's record: the stdio server's stderr, and whether it ever answered."""

    errlog: TextIO
    started: bool = False


def _client(spec: McpServerSpec, session: _Session) -> Client:
    if spec.command is not None:
        program, *args = stdio_command(spec)
        params = StdioServerParameters(command=program, args=args,
                                       env={**os.environ, **spec.env})
        return Client(stdio_client(params, errlog=session.errlog))
    assert spec.url is not None
    return Client(spec.url)


async def _list(spec: McpServerSpec, session: _Session) -> list[McpTool]:
    async with _client(spec, session) as client:
        session.started = True
        listed = await client.list_tools()
    return [McpTool(t.name, t.description or "", dict(t.input_schema), _read_only(t))
            for t in listed.tools]


def _read_only(tool: Any) -> bool:
    annotations = getattr(tool, "annotations", None)
    return bool(annotations is not None and annotations.read_only_hint)


async def _call(spec: McpServerSpec, tool: str, arguments: dict[str, Any],
                session: _Session) -> Any:
    async with _client(spec, session) as client:
        session.started = True
        result = await client.call_tool(tool, arguments)
    texts = [item.text for item in result.content if isinstance(item, TextContent)]
    if result.is_error:
        raise McpToolError(f"MCP tool {spec.name}.{tool} failed: {' '.join(texts)[:2000]}")
    if result.structured_content is not None:
        return result.structured_content
    return {"content": texts}


def _run(make: Any, spec: McpServerSpec, timeout: float) -> Any:
    """Run `make(session)` within `timeout`; a stdio server's stderr is kept in the session, so
    that its last words say why it did not start."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        session = _Session(errlog)
        try:
            return asyncio.run(asyncio.wait_for(make(session), timeout))
        except TimeoutError as exc:
            raise UpstreamError(spec.upstream, f"no answer within {timeout:g}s") from exc
        except McpToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport failure is the server's trouble
            raise _failure(spec, exc, session) from None


def _failure(spec: McpServerSpec, exc: Exception, session: _Session) -> OrchestratorError:
    """Why a session failed: a stdio command that could not run or died before it answered
    (its last line on stderr), else the transport's error, unwrapped from its task groups."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if spec.command is not None and not session.started:
        if isinstance(exc, FileNotFoundError | PermissionError):
            return McpServerDidNotStart(spec, f"{stdio_command(spec)[0]}: {exc.strerror}")
        said = _last_words(session.errlog, stdio_command(spec)[0])
        if said:
            return McpServerDidNotStart(spec, said)
    return UpstreamError(spec.upstream, f"{type(exc).__name__}: {exc}"[:500])


def _last_words(errlog: TextIO, program: str) -> str:
    """The last line a stdio server wrote on stderr, without its program's name in front."""
    errlog.seek(0)
    lines = [line.strip() for line in errlog.read().splitlines() if line.strip()]
    return lines[-1].removeprefix(f"{program}: ")[:500] if lines else ""


def list_tools(spec: McpServerSpec, timeout: float) -> list[McpTool]:
    """The server's tools (`tools/list`)."""
    result: list[McpTool] = _run(lambda session: _list(spec, session), spec, timeout)
    return result


def call_tool(spec: McpServerSpec, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
    """Call one tool: its structured content, or its text content; a tool error raises."""
    return _run(lambda session: _call(spec, tool, arguments, session), spec, timeout)


class McpClient(Upstream):
    """Calls the configured MCP servers' tools, each through its server's breaker (no retry:
    a tool call may have acted)."""

    def __init__(self, breakers: Breakers) -> None:
        super().__init__(breakers, None)

    def call(self, spec: McpServerSpec, tool: str, arguments: dict[str, Any],
             timeout: float) -> Any:
        return self.guarded(spec.upstream, lambda: call_tool(spec, tool, arguments, timeout))
