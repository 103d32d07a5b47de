"""MCP tools as intents: `mcp.<server>.<tool>` on the `tools` pool.

Workers of the `tools` pool list each configured server's tools when they start and publish
them in Redis; every process (API and workers) builds the intents from there, each for the
tenants its server allows.
"""

import json
import logging
import threading
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

import redis

from adapters import mcp
from core.models import Effect, PoolName
from core.settings import McpSettings
from tasks.engine.context import StepContext
from tasks.engine.registry import Intent, JsonInputs, ResourceProvider

log = logging.getLogger(__name__)
PREFIX = "mcp."
TOOLS_KEY = "orch:mcp:tools"
DISCOVERY_KEY = "orch:mcp:discovery"
CACHE_SECONDS = 2.0


def discover(client: redis.Redis, settings: McpSettings) -> int:
    """List every configured server's tools and publish them; returns how many servers
    answered. A server that does not answer keeps what was published before; each server's
    outcome (its tool count, or its error) is kept for `/ready`."""
    answered = 0
    for spec in mcp.load_servers(settings):
        try:
            tools = mcp.list_tools(spec, settings.discovery_timeout)
        except Exception as exc:  # noqa: BLE001 - one server's trouble must not stop the rest
            log.warning("MCP server %s did not list its tools: %s", spec.name, exc)
            _record(client, spec.name, {"status": "failed", "error": str(exc)})
            continue
        client.hset(TOOLS_KEY, spec.name, json.dumps(
            [{"name": t.name, "description": t.description, "input_schema": t.input_schema,
              "read_only": t.read_only} for t in tools]))
        _record(client, spec.name, {"status": "ok", "tools": len(tools), "error": None})
        answered += 1
        log.info("MCP server %s: %d tools", spec.name, len(tools))
    return answered


RETRY_FAILED_AFTER = 60.0  # seconds before a server whose listing failed is asked again


def start_discovery(client: redis.Redis, settings: McpSettings, every: float) -> threading.Event:
    """Discover now, then again whenever a configured server's tools are missing from Redis
    (a broker restarted without its data forgets them, and no worker would publish them again
    until it restarts), checking every `every` seconds; a server whose listing failed is asked
    again after RETRY_FAILED_AFTER. Runs in a daemon thread until the event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                if _missing(client, settings):
                    discover(client, settings)
            except redis.RedisError as exc:  # an outage: the next check tries again
                log.debug("MCP discovery check skipped: %s", exc)
            stop.wait(every)

    threading.Thread(target=loop, name="orch-mcp-discovery", daemon=True).start()
    return stop


def _missing(client: redis.Redis, settings: McpSettings) -> bool:
    """Whether a configured server's tools are unpublished and it is due to be asked."""
    published = {_text(name) for name in client.hkeys(TOOLS_KEY)}
    tried = discovery(client, settings)
    now = time.time()
    return any(name not in published and (
        tried[name]["status"] == "pending" or now - tried[name].get("at", 0) > RETRY_FAILED_AFTER)
        for name in tried)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(client: redis.Redis, name: str, outcome: dict[str, Any]) -> None:
    client.hset(DISCOVERY_KEY, name, json.dumps({**outcome, "at": time.time()}))


def discovery(client: redis.Redis, settings: McpSettings) -> dict[str, dict[str, Any]]:
    """Each configured server's last discovery: `ok` with its tool count, `failed` with its
    error, or `pending` while no tools worker has tried it yet."""
    recorded = {(k.decode() if isinstance(k, bytes) else k): json.loads(v)
                for k, v in client.hgetall(DISCOVERY_KEY).items()}
    return {spec.name: recorded.get(spec.name, {"status": "pending", "error": None})
            for spec in mcp.load_servers(settings)}


def call(spec: mcp.McpServerSpec, tool: str, step: StepContext) -> Any:
    """Call the tool through its server's breaker, within the step's time."""
    rt = step.resources
    timeout = min(spec.timeout or rt.settings.mcp.timeout, max(step.remaining(), 1.0))
    arguments = step.inputs.model_dump(mode="json")
    return rt.mcp.call(spec, tool, arguments, timeout)


class McpProvider(ResourceProvider):
    """The discovered tools of the configured MCP servers, each for its tenants."""

    prefix = PREFIX

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, list[tuple[mcp.McpServerSpec, Intent]]] | None = None

    def intents(self, tenant_id: str | None) -> Iterable[Intent]:
        return [intent for spec, intent in self._intents()
                if spec.tenants is None or (tenant_id is not None and tenant_id in spec.tenants)]

    def _intents(self) -> list[tuple[mcp.McpServerSpec, Intent]]:
        with self._lock:
            if self._cached is None or self._cached[0] < time.monotonic():
                self._cached = (time.monotonic() + CACHE_SECONDS, self._build())
            return self._cached[1]

    def _build(self) -> list[tuple[mcp.McpServerSpec, Intent]]:
        specs = {spec.name: spec for spec in mcp.load_servers(self.resources.settings.mcp)}
        if not specs:
            return []
        try:
            published = self.resources.redis.hgetall(TOOLS_KEY)
        except redis.RedisError as exc:
            log.warning("MCP tools unavailable: %s", exc)
            return []
        found = []
        for raw_name, raw_tools in published.items():
            spec = specs.get(raw_name.decode() if isinstance(raw_name, bytes) else raw_name)
            if spec is not None:
                found += [(spec, _intent(spec, tool)) for tool in json.loads(raw_tools)]
        return found


def _intent(spec: mcp.McpServerSpec, tool: dict[str, Any]) -> Intent:
    return Intent(f"{PREFIX}{spec.name}.{tool['name']}", PoolName.tools, "mcp", JsonInputs,
                  tool["description"] or f"The MCP tool {tool['name']} of {spec.name}.",
                  partial(call, spec, tool["name"]), timeout=spec.timeout,
                  json_schema=tool["input_schema"],
                  effect=Effect.read if tool.get("read_only") else Effect.write)
