"""Calls to tenant-supplied URLs (`http.request`, registered HTTP tools) through the SSRF guard,
a breaker per tenant and host (`http:<tenant>:<host>:<port>`) and the shared retry policy
(idempotent methods only)."""

import time
from dataclasses import dataclass

from adapters import netguard
from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import UpstreamError
from core.settings import HttpSettings, RetrySettings

HTTP_PREFIX = "http:"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class HttpAnswer:
    """An answer below 500: status, content type, the body up to the cap, the time it took."""

    status: int
    content_type: str
    body: bytes
    truncated: bool
    latency_ms: int


class HttpClient(Upstream):
    """Guarded calls to tenant-supplied URLs; one per worker process."""

    def __init__(self, settings: HttpSettings, allowed_networks: list[netguard.Network],
                 retry: RetrySettings, breakers: Breakers,
                 clients: netguard.Clients | None = None) -> None:
        super().__init__(breakers, retry)
        self.settings = settings
        self.allowed = allowed_networks
        self.clients = clients

    def call(self, method: str, url: str, *, tenant_id: str, body: bytes | None,
             headers: dict[str, str], timeout: float) -> HttpAnswer:
        """Send once (retried only when idempotent); a 5xx or 429 is an UpstreamError.

        The breaker is the tenant's own for that host and port: another tenant's failures
        to the same host never open it."""
        upstream = netguard.tenant_upstream(HTTP_PREFIX, tenant_id, url)

        def send() -> HttpAnswer:
            started = time.monotonic()
            answer = netguard.request(method, url, body=body, headers=headers, timeout=timeout,
                                      max_response_bytes=self.settings.max_response_bytes,
                                      allowed=self.allowed, clients=self.clients)
            if answer.status >= 500 or answer.status == 429:
                retry_after = answer.headers.get("retry-after")
                raise UpstreamError(upstream, f"answered {answer.status}", status=answer.status,
                                    retry_after=float(retry_after) if retry_after and
                                    retry_after.isdigit() else None)
            return HttpAnswer(answer.status, answer.headers.get("content-type", ""), answer.body,
                              answer.truncated, int((time.monotonic() - started) * 1000))

        return self.guarded(upstream, send, retry=method.upper() in IDEMPOTENT)
