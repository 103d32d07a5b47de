"""The SSRF guard every tenant-supplied URL passes: callbacks, `http.request`, HTTP tools.

A target must be public: its host is resolved once, every address is checked, and the request
connects to a checked address (the name goes in `Host` and TLS SNI), so a DNS answer cannot
change between the check and the connection. Loopback, private, link-local, CGNAT,
unique-local, IPv4-mapped and `0.0.0.0/8` addresses are refused unless allow-listed. Redirects
are never followed and answers are read up to a cap. Upstreams an operator configures (the
LLM, n8n, MCP servers, SSH hosts) are trusted settings and do not pass through here.
"""

import functools
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from core.errors import RefusedTarget

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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
    """Why a tenant-supplied URL may not reach `address`, or None when it may."""
    kind = _refused_kind(address, allowed)
    return kind and f"refused: {address} is {kind}; {ALLOW_HINT}"


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


def check_url_at_submit(url: str, allowed: list[Network], field: str = "callback_url") -> None:
    """Refuse a URL that is not http(s) or whose literal IP is refused (no DNS)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise RefusedTarget(f"{field} must be http or https, not '{parts.scheme}'",
                            field=field)
    if not parts.hostname:
        raise RefusedTarget(f"{field} has no host", field=field)
    if problem := host_problem(parts.hostname):
        raise RefusedTarget(f"{field}: {problem}", field=field)
    address = _literal(parts.hostname)
    reason = refusal(address, allowed) if address is not None else None
    if reason:
        raise RefusedTarget(f"{field} {reason}", field=field)


@dataclass(frozen=True)
class Target:
    """Where to connect (a checked IP) and what to call the host in `Host` and TLS SNI."""

    urls: list[httpx.URL]
    host_header: str
    sni_hostname: str | None


class GuardTimeout(Exception):
    """Raised when an attempt runs out of its time."""


def resolve(host: str, port: int, timeout: float) -> list[Address]:
    """Every address `host` resolves to, within `timeout` seconds."""
    if (address := _literal(host)) is not None:
        return [address]
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = future.result(timeout=timeout)
    except TimeoutError as exc:
        raise GuardTimeout(f"resolving {host}") from exc
    finally:
        pool.shutdown(wait=False)
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    return list(dict.fromkeys(found))


def target(url: str, timeout: float, allowed: list[Network]) -> Target:
    """Resolve `url`'s host once and refuse it if ANY of its addresses is refused."""
    parsed = httpx.URL(url)
    if parsed.scheme not in SCHEMES or not parsed.raw_host:
        raise RefusedTarget(f"refused: only http(s) URLs with a host, not '{parsed.scheme}:'")
    host = parsed.raw_host.decode("ascii")
    addresses = resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80), timeout)
    for address in addresses:
        if reason := refusal(address, allowed):
            raise RefusedTarget(reason)
    sni = host if parsed.scheme == "https" and _literal(host) is None else None
    return Target(urls=[parsed.copy_with(host=str(address)) for address in addresses],
                   host_header=parsed.netloc.decode("ascii").rpartition("@")[2],
                   sni_hostname=sni)


def read_capped(response: httpx.Response, cap: int, deadline: float) -> tuple[bytes, bool]:
    """At most `cap` bytes of the body, as sent, and whether more was cut off; stops at the cap
    or the deadline."""
    body = bytearray()
    for chunk in response.iter_raw(READ_CHUNK):
        room = cap - len(body)
        body += chunk[:room]
        if len(chunk) > room:
            return bytes(body), True
        if time.monotonic() > deadline:
            raise GuardTimeout("reading the response")
    return bytes(body), False


_ssl_lock = threading.Lock()


@functools.cache
def _built_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def default_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (milliseconds of CPU), so
    threads asking at once wait for the first instead of each building its own."""
    with _ssl_lock:
        return _built_ssl_context()


def describe(exc: Exception, timeout: float, what: str = "URL") -> str:
    """The error text of an attempt that got no answer; never includes headers."""
    if isinstance(exc, RefusedTarget):
        return str(exc)
    if isinstance(exc, GuardTimeout | httpx.TimeoutException):
        return f"timeout: no complete answer within {timeout:g}s ({str(exc) or 'timed out'})"
    if isinstance(exc, socket.gaierror):
        return f"could not resolve the host: {exc.strerror or exc}"
    if isinstance(exc, httpx.InvalidURL | UnicodeError):
        return f"invalid {what}: {_short(str(exc), 200)}"
    return f"connection failed: {type(exc).__name__}: {exc}"




@dataclass(frozen=True)
class Answer:
    """A guarded request's answer: status, headers, the body up to the cap, whether it was cut."""

    status: int
    headers: httpx.Headers
    body: bytes
    truncated: bool


def _exchange(client: httpx.Client, method: str, url: httpx.URL, checked: Target,
              body: bytes | None, headers: dict[str, str], cap: int,
              deadline: float) -> Answer:
    """Send once to one checked address and read a capped answer."""
    send_headers = {**headers, "host": checked.host_header, "accept-encoding": "identity"}
    extensions = {"sni_hostname": checked.sni_hostname} if checked.sni_hostname else {}
    remaining = max(deadline - time.monotonic(), 0.001)
    with client.stream(method, url, content=body, headers=send_headers,
                       extensions=extensions, timeout=remaining) as response:
        content, truncated = read_capped(response, cap, deadline)
        return Answer(response.status_code, response.headers, content, truncated)


class Clients:
    """Kept-alive guarded clients, one per host name: a pooled connection carries only requests
    for the name it was opened (and TLS-verified) for, and only to an address this request's
    check passed (a client's pool is keyed by the checked address it connects to).

    The check stays per request: `request` resolves and checks every time, so a connection to
    an address the host no longer resolves to (or that is now refused) is never used. A host's
    client is split in `shards` by thread, so many threads calling one host do not all queue on
    one connection pool's lock.
    """

    def __init__(self, max_clients: int = 512, max_connections: int = 32,
                 shards: int = 8) -> None:
        self._clients: OrderedDict[tuple[object, ...], httpx.Client] = OrderedDict()
        self._lock = threading.Lock()
        self._max, self._shards = max_clients, shards
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)

    def client(self, url: httpx.URL, checked: Target, verify: ssl.SSLContext) -> httpx.Client:
        """The client of `checked`'s host name (scheme, Host, SNI and TLS context), this
        thread's shard of it."""
        key = (url.scheme, checked.host_header, checked.sni_hostname, id(verify),
               threading.get_native_id() % self._shards)
        with self._lock:
            client = self._clients.pop(key, None)
            if client is None:
                client = httpx.Client(follow_redirects=False, trust_env=False, verify=verify,
                                      limits=self._limits)
            self._clients[key] = client
            evicted = (self._clients.popitem(last=False)[1]
                       if len(self._clients) > self._max else None)
        if evicted is not None:
            # The least recently used host's; a request still on it fails as one attempt.
            evicted.close()
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            client.close()


def request(method: str, url: str, *, body: bytes | None, headers: dict[str, str],
            timeout: float, max_response_bytes: int, allowed: list[Network],
            ssl_context: ssl.SSLContext | None = None,
            clients: Clients | None = None) -> Answer:
    """One request to `url` through the guard; raises RefusedTarget, GuardTimeout or httpx's.

    Through `clients`' kept-alive client of the host, or a client of its own: either way its
    connections are to checked addresses under one host's name, never another host's (TLS was
    verified for its SNI).
    """
    deadline = time.monotonic() + timeout
    checked = target(url, timeout, allowed)
    verify = ssl_context if ssl_context is not None else default_ssl_context()
    if clients is not None:
        return _send(clients.client(checked.urls[0], checked, verify), method, checked, body,
                     headers, max_response_bytes, deadline)
    with httpx.Client(follow_redirects=False, trust_env=False, verify=verify) as client:
        return _send(client, method, checked, body, headers, max_response_bytes, deadline)


def _send(client: httpx.Client, method: str, checked: Target, body: bytes | None,
          headers: dict[str, str], cap: int, deadline: float) -> Answer:
    """Try each checked address in turn until one connects."""
    for address in checked.urls[:-1]:
        try:
            return _exchange(client, method, address, checked, body, headers, cap, deadline)
        except httpx.ConnectError:
            continue
    return _exchange(client, method, checked.urls[-1], checked, body, headers, cap, deadline)


def host_of(url: str) -> str:
    """The host of a URL, lower-cased."""
    return (urlsplit(url).hostname or "").lower()


def tenant_upstream(prefix: str, tenant_id: str, url: str) -> str:
    """The breaker of a tenant-supplied URL: per tenant and per host:port
    (`http:ten_…:host:443`), so one tenant's failing calls never open another's breaker."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        port = 0
    host = host_of(url)
    return f"{prefix}{tenant_id}:{f'[{host}]' if ':' in host else host}:{port}"


def tenant_of_upstream(prefix: str, name: str) -> str | None:
    """The tenant a `tenant_upstream` name belongs to, or None for another kind of name."""
    if not name.startswith(prefix):
        return None
    tenant, sep, _ = name.removeprefix(prefix).partition(":")
    return tenant if sep else None
