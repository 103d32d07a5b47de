"""External agents (reference 003): a health check, and an invocation read as an SSE stream.

An agent serves `POST {endpoint}/invoke`, answering `event: delta` (`{"text"}`) events and one
`event: done` (`{"final_message", "usage"}`). Endpoints are tenant-supplied URLs: every request
connects only to an address the SSRF guard checked, and follows no redirect.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from adapters import netguard
from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import InvalidRequest, RefusedTarget, UpstreamError
from core.settings import RetrySettings

UPSTREAM = "agent"


@dataclass(frozen=True)
class AgentRun:
    """What an agent answered: its final message, usage, and the streamed text."""

    final_message: str
    usage: dict[str, Any] = field(default_factory=dict)
    text: str = ""


AGENT_PREFIX = "agent:"


class AgentClient(Upstream):
    """Talks to agents' endpoints (tenants' URLs, through the guard and each tenant's own
    breaker per host); one per process, closed with it."""

    def __init__(self, allowed: list[netguard.Network], breakers: Breakers,
                 retry: RetrySettings) -> None:
        super().__init__(breakers, retry)
        self.allowed = allowed
        self.http = httpx.Client(follow_redirects=False, trust_env=False,
                                 verify=netguard.default_ssl_context())

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, url: str, timeout: float) -> tuple[httpx.URL, dict[str, Any]]:
        """The checked address to connect to, and the headers and TLS name for the host."""
        target = netguard.target(url, timeout, self.allowed)
        options: dict[str, Any] = {"headers": {"host": target.host_header}}
        if target.sni_hostname:
            options["extensions"] = {"sni_hostname": target.sni_hostname}
        return target.urls[0], options

    def health(self, endpoint: str, timeout: float) -> None:
        """Raise InvalidRequest unless `GET {endpoint}/health` answers 2xx in time."""
        url = f"{endpoint.rstrip('/')}/health"
        try:
            address, options = self._request("GET", url, timeout)
            # A fresh connection each time: a kept-alive one can outlive the agent's server.
            options["headers"]["connection"] = "close"
            response = self.http.get(address, timeout=timeout, **options)
        except RefusedTarget as exc:
            raise InvalidRequest(f"endpoint: {exc}", field="endpoint") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError, netguard.GuardTimeout) as exc:
            # A slow resolver (GuardTimeout) is the endpoint not answering in time, not a 500.
            raise InvalidRequest(f"endpoint: GET /health failed: {type(exc).__name__}",
                                 field="endpoint") from exc
        if not response.is_success:
            raise InvalidRequest(f"endpoint: GET /health answered {response.status_code}",
                                 field="endpoint")

    def invoke(self, tenant_id: str, endpoint: str, payload: dict[str, Any], timeout: float,
               on_delta: Callable[[str, int], None]) -> AgentRun:
        """Run the agent through the tenant's breaker for its host and port; a stream that
        breaks off is tried again by the retry policy (`on_delta(text, attempt)`)."""
        upstream = netguard.tenant_upstream(AGENT_PREFIX, tenant_id, endpoint)
        attempts = [0]

        def attempt() -> AgentRun:
            attempts[0] += 1
            number = attempts[0]
            return self._invoke(endpoint, payload, timeout, lambda text: on_delta(text, number))

        return self.guarded(upstream, attempt)

    def _invoke(self, endpoint: str, payload: dict[str, Any], timeout: float,
                on_delta: Callable[[str], None]) -> AgentRun:
        """POST the run and read its stream to `done`; a stream that breaks off is an error."""
        deadline = time.monotonic() + timeout
        address, options = self._request("POST", f"{endpoint.rstrip('/')}/invoke",
                                         min(timeout, 10.0))
        options["headers"]["accept"] = "text/event-stream"
        with self.http.stream("POST", address, json=payload, timeout=timeout,
                              **options) as response:
            if not response.is_success:
                raise UpstreamError(UPSTREAM, f"/invoke answered {response.status_code}",
                                    status=response.status_code)
            return _read(EventSource(response), deadline, on_delta)


def _read(source: EventSource, deadline: float, on_delta: Callable[[str], None]) -> AgentRun:
    parts: list[str] = []
    try:
        for event in source.iter_sse():
            if time.monotonic() > deadline:
                raise UpstreamError(UPSTREAM, "the run outlived AGENT_TIMEOUT_MS", status=408)
            if event.event == "delta":
                text = str(event.json().get("text", ""))
                parts.append(text)
                on_delta(text)
            elif event.event == "done":
                done = event.json()
                return AgentRun(str(done.get("final_message", "".join(parts))),
                                dict(done.get("usage") or {}), "".join(parts))
            elif event.event == "error":
                raise UpstreamError(UPSTREAM, f"the agent reported: {event.data[:500]}",
                                    status=400)
    except httpx.TransportError as exc:
        raise UpstreamError(UPSTREAM, f"the stream broke off ({type(exc).__name__})") from exc
    raise UpstreamError(UPSTREAM, "the stream ended before its done event")
