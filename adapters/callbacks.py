"""Signed callbacks: Standard Webhooks signatures and one SSRF-safe delivery attempt."""

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from secrets import token_bytes
from urllib.parse import urlsplit

import httpx

from core.errors import RefusedTarget

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SCHEMES = ("http", "https")
ALLOW_HINT = "allow it with CALLBACK_ALLOWED_NETWORKS"
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
SHARED = ipaddress.IPv4Network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
INET_ATON_CHARS = set("0123456789abcdefx.")
LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
MAX_HOST = 253
READ_CHUNK = 16 * 1024


# --- Standard Webhooks signing ---------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


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


# --- SSRF guard --------------------------------------------------------------------------------


def parse_networks(cidrs: list[str]) -> list[Network]:
    """The allow-list's CIDRs as networks (host bits are ignored)."""
    return [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 address really reaches."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: Address) -> str | None:
    """What makes `address` non-global ("a private address"), or None when it is global."""
    checks: list[tuple[bool, str]] = [
        (address.is_unspecified, "an unspecified address"),
        (address in THIS_NETWORK, "a 'this network' (0.0.0.0/8) address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address in SHARED, "a shared (CGNAT) address"),
        (address.is_multicast, "a multicast address"),
        (address in UNIQUE_LOCAL, "a unique-local address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-global address"),
    ]
    return next((kind for refused, kind in checks if refused), None)


def _refused_kind(address: Address, allowed: list[Network]) -> str | None:
    """`_kind`, unless `allowed` covers the address; an embedded IPv4 is judged as itself."""
    if any(address in network for network in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        v4 = _embedded_ipv4(address)
        if v4 is not None:
            kind = _refused_kind(v4, allowed)
            return kind and f"{kind} (it reaches {v4})"
    return _kind(address)


def refusal(address: Address, allowed: list[Network]) -> str | None:
    """Why a callback may not reach `address`, or None when it may."""
    kind = _refused_kind(address, allowed)
    return kind and f"refused: {address} is {kind}; {ALLOW_HINT}"


def is_refused(address: Address, allowed: list[Network]) -> bool:
    """True when `address` is not global and not inside one of the `allowed` networks."""
    return refusal(address, allowed) is not None


def _literal(host: str) -> Address | None:
    """The IP address `host` spells, also in the short forms inet_aton reads (`127.1`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host[:1].isdigit() or not set(host.lower()) <= INET_ATON_CHARS:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _short(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:keep]}… ({len(text)} characters)"


def host_problem(host: str) -> str | None:
    """Why `host` is neither an IP address nor a DNS name a resolver accepts, or None."""
    if _literal(host) is not None:
        return None
    try:
        name = host.encode("idna").decode("ascii").lower().removesuffix(".")
    except UnicodeError:
        return f"'{_short(host)}' is not a valid host name (a label is empty or over 63 " \
               "characters)"
    if len(name) > MAX_HOST:
        return f"'{_short(name)}' is not a valid host name (over {MAX_HOST} characters)"
    bad = next((label for label in name.split(".") if not LABEL.fullmatch(label)), None)
    if bad is not None:
        return f"'{_short(name)}' is not a valid host name (label '{_short(bad)}': letters, " \
               "digits, underscores and inner hyphens, 1 to 63 of them)"
    return None


def check_url_at_submit(url: str, allowed: list[Network]) -> None:
    """Refuse a callback URL that is not http(s) or whose literal IP is refused (no DNS)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise RefusedTarget(f"callback_url must be http or https, not '{parts.scheme}'",
                            field="callback_url")
    if not parts.hostname:
        raise RefusedTarget("callback_url has no host", field="callback_url")
    if problem := host_problem(parts.hostname):
        raise RefusedTarget(f"callback_url: {problem}", field="callback_url")
    address = _literal(parts.hostname)
    reason = refusal(address, allowed) if address is not None else None
    if reason:
        raise RefusedTarget(f"callback_url {reason}", field="callback_url")


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
    gone: bool


@dataclass(frozen=True)
class _Target:
    """Where to connect (a checked IP) and what to call the host in `Host` and TLS SNI."""

    urls: list[httpx.URL]
    host_header: str
    sni_hostname: str | None


class _Timeout(Exception):
    """Raised when an attempt runs out of its time."""


def _resolve(host: str, port: int, timeout: float) -> list[Address]:
    """Every address `host` resolves to, within `timeout` seconds."""
    if (address := _literal(host)) is not None:
        return [address]
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = future.result(timeout=timeout)
    except TimeoutError as exc:
        raise _Timeout(f"resolving {host}") from exc
    finally:
        pool.shutdown(wait=False)
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    return list(dict.fromkeys(found))


def _target(url: str, timeout: float, allowed: list[Network]) -> _Target:
    """Resolve `url`'s host once and refuse it if ANY of its addresses is refused."""
    parsed = httpx.URL(url)
    if parsed.scheme not in SCHEMES or not parsed.raw_host:
        raise RefusedTarget(f"refused: only http(s) URLs with a host, not '{parsed.scheme}:'")
    host = parsed.raw_host.decode("ascii")
    addresses = _resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80), timeout)
    for address in addresses:
        if reason := refusal(address, allowed):
            raise RefusedTarget(reason)
    sni = host if parsed.scheme == "https" and _literal(host) is None else None
    return _Target(urls=[parsed.copy_with(host=str(address)) for address in addresses],
                   host_header=parsed.netloc.decode("ascii").rpartition("@")[2],
                   sni_hostname=sni)


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


def _read_capped(response: httpx.Response, cap: int, deadline: float) -> bytes:
    """At most `cap` bytes of the body, as sent; stops at the cap or the deadline."""
    body = bytearray()
    for chunk in response.iter_raw(READ_CHUNK):
        body += chunk[: cap - len(body)]
        if len(body) >= cap:
            break
        if time.monotonic() > deadline:
            raise _Timeout("reading the response")
    return bytes(body)


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"answered {status}, a redirect; redirects are not followed"
    return f"answered {status}"


def _exchange(client: httpx.Client, url: httpx.URL, target: _Target, body: bytes,
              headers: dict[str, str], cap: int, deadline: float) -> Attempt:
    """POST once to one checked address and read a capped answer."""
    send_headers = {**headers, "host": target.host_header, "accept-encoding": "identity"}
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else {}
    remaining = max(deadline - time.monotonic(), 0.001)
    with client.stream("POST", url, content=body, headers=send_headers,
                       extensions=extensions, timeout=remaining) as response:
        text = _read_capped(response, cap, deadline).decode("utf-8", errors="replace")
        status = response.status_code
        return Attempt(status_code=status, latency_ms=0, error=_status_error(status),
                       retry_after=parse_retry_after(response.headers.get("retry-after")),
                       response_body=text, ok=200 <= status < 300, gone=status == 410)


def _post(target: _Target, body: bytes, headers: dict[str, str], cap: int, deadline: float,
          ssl_context: ssl.SSLContext | None) -> Attempt:
    """Try the checked addresses in order until one accepts the connection."""
    verify = ssl_context if ssl_context is not None else default_ssl_context()
    with httpx.Client(follow_redirects=False, trust_env=False, verify=verify) as client:
        for url in target.urls[:-1]:
            try:
                return _exchange(client, url, target, body, headers, cap, deadline)
            except httpx.ConnectError:
                continue
        return _exchange(client, target.urls[-1], target, body, headers, cap, deadline)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (milliseconds of CPU)."""
    return httpx.create_ssl_context()


def _describe(exc: Exception, timeout: float) -> str:
    """The error text of an attempt that got no answer; never includes headers."""
    if isinstance(exc, RefusedTarget):
        return str(exc)
    if isinstance(exc, _Timeout | httpx.TimeoutException):
        return f"timeout: no complete answer within {timeout:g}s ({str(exc) or 'timed out'})"
    if isinstance(exc, socket.gaierror):
        return f"could not resolve the host: {exc.strerror or exc}"
    if isinstance(exc, httpx.InvalidURL | UnicodeError):
        return f"invalid callback URL: {_short(str(exc), 200)}"
    return f"connection failed: {type(exc).__name__}: {exc}"


def deliver(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
            max_response_bytes: int, allowed: list[Network],
            ssl_context: ssl.SSLContext | None = None) -> Attempt:
    """POST `body` to `url` once; connects only to checked addresses, follows no redirect."""
    started = time.monotonic()
    try:
        target = _target(url, timeout, allowed)
        attempt = _post(target, body, headers, max_response_bytes, started + timeout,
                        ssl_context)
    except Exception as exc:  # noqa: BLE001 - every failure is an attempt the schedule counts
        # An exception escaping here would leave the delivery leased, to be sent again at
        # every lease expiry forever, never `dead`.
        attempt = Attempt(status_code=None, latency_ms=0, error=_describe(exc, timeout),
                          retry_after=None, response_body="", ok=False, gone=False)
    latency_ms = int((time.monotonic() - started) * 1000)
    log.info("callback attempt to %s: status %s in %d ms", urlsplit(url).hostname,
             attempt.status_code, latency_ms)
    return replace(attempt, latency_ms=latency_ms)
