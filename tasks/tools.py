"""HTTP on the `tools` pool: the built-in `http.request`, and the HTTP tools tenants register
(`tool.<name>`, for that tenant only), all through the SSRF guard and a breaker per host."""

import functools
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, Field

from adapters import netguard
from core import jsonschemas
from core.errors import InvalidRequest
from core.models import Effect, HttpTool, PoolName
from core.store.tools import list_tools
from core.vault import Vault
from tasks.engine.context import StepContext
from tasks.engine.registry import Intent, JsonInputs, ResourceProvider

TOOL_PREFIX = "tool."
FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
CACHE_SECONDS = 1.0
QUERY_METHODS = frozenset({"GET", "HEAD", "DELETE"})
READ_METHODS = frozenset({"GET", "HEAD"})
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class HttpRequestInputs(BaseModel):
    """One HTTP request to a public URL (private ones only if allow-listed)."""

    method: Method = Field("GET", description="The HTTP method.")
    url: str = Field(min_length=1, max_length=2048, description=(
        "http(s) URL; private, loopback and link-local addresses are refused unless in "
        "CALLBACK_ALLOWED_NETWORKS; redirects are not followed."))
    headers: dict[str, str] = Field(default_factory=dict, max_length=50,
                                    description="Request headers.")
    body: Any = Field(None, description="Sent as JSON (a string: as text); none when null.")
    timeout: float | None = Field(None, gt=0, le=300, description=(
        "Seconds the call may take (default HTTP_TIMEOUT)."))


def _encode(body: Any, headers: dict[str, str]) -> tuple[bytes | None, dict[str, str]]:
    if body is None:
        return None, headers
    if isinstance(body, str):
        return body.encode(), {"content-type": "text/plain; charset=utf-8", **headers}
    return json.dumps(body).encode(), {"content-type": "application/json", **headers}


def _decode(content_type: str, body: bytes, truncated: bool) -> Any:
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type and not truncated:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def call(step: StepContext, method: str, url: str, headers: dict[str, str], body: Any,
         timeout: float | None) -> dict[str, Any]:
    """One guarded call; an answer below 500 is the output (a 5xx fails the step)."""
    rt = step.resources
    content, headers = _encode(body, headers)
    limit = min(timeout or rt.settings.http.timeout, max(step.remaining(), 0.1))
    answer = rt.http.call(method, url, tenant_id=step.tenant_id, body=content, headers=headers,
                          timeout=limit)
    return {"status": answer.status, "content_type": answer.content_type,
            "body": _decode(answer.content_type, answer.body, answer.truncated),
            "truncated": answer.truncated, "latency_ms": answer.latency_ms}


def method_effect(method: str) -> Effect:
    """GET and HEAD read; every other method may change something."""
    return Effect.read if method.upper() in READ_METHODS else Effect.write


def request_effect(inputs: HttpRequestInputs) -> Effect:
    """`http.request`'s effect: its method's."""
    return method_effect(inputs.method)


def http_request(step: StepContext) -> dict[str, Any]:
    """`http.request`: the request as given."""
    assert isinstance(step.inputs, HttpRequestInputs)
    inputs = step.inputs
    return call(step, inputs.method, inputs.url, inputs.headers, inputs.body, inputs.timeout)


# --- registered tools ------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool as a step needs it."""

    name: str
    description: str
    method: str
    url: str
    headers: dict[str, str]
    input_schema: dict[str, Any]
    timeout: float | None

    @classmethod
    def of(cls, row: HttpTool, vault: Vault) -> "ToolSpec":
        """The tool of a stored row, its sealed header values opened."""
        return cls(row.name, row.description, row.method, row.url,
                   vault.open_values(row.headers), dict(row.input_schema), row.timeout)


def expand(template: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL with each `{field}` replaced by that input (URL-encoded), and the inputs left."""
    names = FIELD.findall(template)
    missing = [name for name in names if name not in inputs]
    if missing:
        raise InvalidRequest(f"inputs.{missing[0]}: the tool's URL needs it",
                             field=f"inputs.{missing[0]}")
    url = FIELD.sub(lambda m: quote(str(inputs[m.group(1)]), safe=""), template)
    return url, {key: value for key, value in inputs.items() if key not in names}


def call_tool(spec: ToolSpec, step: StepContext) -> dict[str, Any]:
    """Call the tool: inputs fill the URL; the rest go as the query (GET, HEAD, DELETE) or as
    the JSON body."""
    url, rest = expand(spec.url, step.inputs.model_dump(mode="json"))
    if spec.method in QUERY_METHODS:
        query = urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in rest.items()})
        url, rest = (f"{url}{'&' if '?' in url else '?'}{query}" if query else url), {}
    return call(step, spec.method, url, spec.headers, rest or None, spec.timeout)


def tool_intent(spec: ToolSpec) -> Intent:
    """The intent of a registered tool: `tool.<name>`, inputs by its JSON schema."""
    return Intent(f"{TOOL_PREFIX}{spec.name}", PoolName.tools, "agent", JsonInputs,
                  spec.description or f"{spec.method} {spec.url}",
                  functools.partial(call_tool, spec), timeout=spec.timeout,
                  json_schema=spec.input_schema, effect=method_effect(spec.method))


class ToolProvider(ResourceProvider):
    """Each tenant's registered tools, read from the job store (kept a second per tenant)."""

    prefix = TOOL_PREFIX

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[Intent]]] = {}
        self._lock = threading.Lock()

    def intents(self, tenant_id: str | None) -> Iterable[Intent]:
        if tenant_id is None:
            return []
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        with self.resources.db.read() as session:
            specs = [ToolSpec.of(row, self.resources.vault)
                     for row in list_tools(session=session, tenant_id=tenant_id)]
        intents = [tool_intent(spec) for spec in specs]
        with self._lock:
            self._cache[tenant_id] = (time.monotonic() + CACHE_SECONDS, intents)
        return intents

    def forget(self, tenant_id: str | None) -> None:
        """Read the tenant's tools from the store next time (one was added or removed)."""
        with self._lock:
            self._cache.pop(tenant_id or "", None)


def check_tool(url: str, input_schema: dict[str, Any],
               allowed: list[netguard.Network]) -> str:
    """Refuse a tool whose URL template or schema cannot work; returns the URL's host.

    `{field}` may fill the path and query, never the scheme or host (the guard checks a host
    at registration and at every call, and a breaker is named by it).
    """
    example = FIELD.sub("x", url)
    parts = urlsplit(url)
    if "{" in parts.netloc or "{" in parts.scheme:
        raise InvalidRequest("url: `{field}` may fill the path and query, not the host",
                             field="url")
    netguard.check_url_at_submit(example, allowed, field="url")
    jsonschemas.check(input_schema)
    if input_schema.get("type") != "object":
        raise InvalidRequest('input_schema: the inputs are an object: "type": "object"',
                             field="input_schema")
    return netguard.host_of(example)
