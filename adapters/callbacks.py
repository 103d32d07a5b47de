"""Signed callbacks: Standard Webhooks signatures and one delivery attempt through the guard."""

import base64
import hashlib
import hmac
import logging
import math
import ssl
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from adapters import netguard
from adapters.breakers import Breakers
from adapters.netguard import Network
from adapters.upstream import Upstream
from core.deliveries import SECRET_PREFIX
from core.errors import RefusedTarget, UpstreamError
from core.settings import CallbackSettings

log = logging.getLogger(__name__)



# --- Standard Webhooks signing (secrets are made with the tenant: core.deliveries.new_secret) --


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64 HMAC-SHA256>` signature of `{msg_id}.{timestamp}.{body}`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(secrets: list[str], msg_id: str, timestamp: int,
                    body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers, with one signature per secret (old and new in rotation)."""
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    signatures = " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures, "content-type": "application/json"}


# --- one delivery attempt ----------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt got: the answer, or why there was none."""

    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after: float | None
    response_body: str
    ok: bool
    gone: bool  # no retry can succeed: a 410, or a target the SSRF guard refuses


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` value asks to wait (delta-seconds or HTTP-date); None if unusable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"answered {status}, a redirect; redirects are not followed"
    return f"answered {status}"


def _attempt(answer: netguard.Answer) -> Attempt:
    status = answer.status
    return Attempt(status_code=status, latency_ms=0, error=_status_error(status),
                   retry_after=parse_retry_after(answer.headers.get("retry-after")),
                   response_body=answer.body.decode("utf-8", errors="replace"),
                   ok=200 <= status < 300, gone=status == 410)


def deliver(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
            max_response_bytes: int, allowed: list[Network],
            ssl_context: ssl.SSLContext | None = None,
            clients: netguard.Clients | None = None) -> Attempt:
    """POST `body` to `url` once; connects only to checked addresses, follows no redirect."""
    started = time.monotonic()
    try:
        attempt = _attempt(netguard.request(
            "POST", url, body=body, headers=headers, timeout=timeout,
            max_response_bytes=max_response_bytes, allowed=allowed, ssl_context=ssl_context,
            clients=clients))
    except RefusedTarget as exc:
        # The guard refuses the address the host resolves to now; retrying only asks again.
        attempt = Attempt(status_code=None, latency_ms=0, error=str(exc), retry_after=None,
                          response_body="", ok=False, gone=True)
    except Exception as exc:  # noqa: BLE001 - every failure is an attempt the schedule counts
        # An exception escaping here would leave the delivery leased, to be sent again at
        # every lease expiry forever, never `dead`.
        attempt = Attempt(status_code=None, latency_ms=0,
                          error=netguard.describe(exc, timeout, "callback URL"),
                          retry_after=None, response_body="", ok=False, gone=False)
    latency_ms = int((time.monotonic() - started) * 1000)
    # A failed attempt is worth a line; at hundreds a second, a delivered one is not.
    log.log(logging.DEBUG if attempt.ok else logging.INFO,
            "callback attempt to %s: status %s in %d ms", urlsplit(url).hostname,
            attempt.status_code, latency_ms)
    return replace(attempt, latency_ms=latency_ms)


CALLBACK_PREFIX = "callback:"


class _Failed(UpstreamError):
    """Raised inside the breaker so a 5xx or unreachable receiver counts as a failure."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__("callback", attempt.error or f"answered {attempt.status_code}",
                         status=attempt.status_code, retry_after=attempt.retry_after)
        self.attempt = attempt


class Sender(Upstream):
    """Sends signed callbacks, each through its tenant's breaker for the receiver's host and
    port; retries are the delivery schedule's, kept in the store, not this upstream's."""

    def __init__(self, settings: CallbackSettings, allowed: list[Network],
                 breakers: Breakers, clients: netguard.Clients | None = None) -> None:
        super().__init__(breakers, None)
        self.settings = settings
        self.allowed = allowed
        self.clients = clients

    def send(self, tenant_id: str, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        """One attempt; an open breaker raises UpstreamUnavailable. A refused target is no
        failure of the host's (nothing was sent), so it is not counted."""

        def attempt() -> Attempt:
            sent = deliver(url, body, headers, timeout=self.settings.timeout,
                           max_response_bytes=self.settings.max_response_bytes,
                           allowed=self.allowed, clients=self.clients)
            if not sent.gone and (sent.status_code is None or sent.status_code >= 500):
                raise _Failed(sent)
            return sent

        try:
            return self.guarded(netguard.tenant_upstream(CALLBACK_PREFIX, tenant_id, url),
                                attempt)
        except _Failed as failed:
            return failed.attempt
