"""One delivery attempt against real HTTP(S) servers on loopback: signed, capped, SSRF-safe."""

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from adapters import netguard
from adapters.callbacks import (
    Attempt,
    deliver,
    parse_retry_after,
    webhook_headers,
)
from adapters.netguard import parse_networks
from core.deliveries import new_secret
from tests.integration.receiver import reply, serve

LOOPBACK = parse_networks(["127.0.0.1/32"])
BODY = b'{"type": "job.succeeded", "data": {"job_id": "j1"}}'


def send(url: str, *, secret: str | None = None, timeout: float = 5.0,
         allowed: Any = LOOPBACK, cap: int = 64 * 1024, **kwargs: Any) -> Attempt:
    headers = webhook_headers([secret or new_secret()], "msg_1", int(time.time()), BODY)
    return deliver(url, BODY, headers, timeout=timeout, max_response_bytes=cap,
                   allowed=allowed, **kwargs)


def test_a_2xx_is_ok_and_carries_verifiable_standard_webhooks_headers() -> None:
    # Given a receiver that answers 204
    secret = new_secret()
    with serve(reply(204, body=b"")) as hook:
        # When one attempt is sent
        attempt = send(f"{hook.url}/hook?x=1", secret=secret)
    # Then it is ok, and the request as received verifies with the reference library
    assert (attempt.ok, attempt.gone, attempt.status_code, attempt.error) == (True, False, 204,
                                                                             None)
    [seen] = hook.received
    assert (seen.path, seen.body) == ("/hook?x=1", BODY)
    assert seen.headers["host"] == f"127.0.0.1:{hook.port}"
    assert seen.headers["content-type"] == "application/json"
    assert Webhook(secret).verify(seen.body, seen.headers) == {"type": "job.succeeded",
                                                               "data": {"job_id": "j1"}}
    assert attempt.latency_ms >= 0


def test_a_500_with_retry_after_seconds_is_a_failure_with_its_delay() -> None:
    with serve(reply(500, {"Retry-After": "7"}, b"boom")) as hook:
        attempt = send(hook.url)
    assert (attempt.ok, attempt.gone, attempt.status_code) == (False, False, 500)
    assert attempt.retry_after == 7
    assert attempt.error == "answered 500"
    assert attempt.response_body == "boom"


def test_a_retry_after_http_date_is_read_as_seconds_from_now() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    with serve(reply(503, {"Retry-After": when})) as hook:
        attempt = send(hook.url)
    assert attempt.retry_after is not None
    assert 100 < attempt.retry_after <= 120


@pytest.mark.parametrize(("value", "seconds"), [
    pytest.param("0", 0.0, id="zero"),
    pytest.param(" 42 ", 42.0, id="spaces"),
    pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="date-in-the-past"),
    pytest.param("Wed, 21 Oct 2015 07:30:00 GMT", 120.0, id="date-in-the-future"),
    pytest.param("-5", 0.0, id="negative"),
    pytest.param("soon", None, id="garbage"),
    pytest.param("nan", None, id="nan"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="absent"),
])
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == seconds


def test_a_410_is_gone() -> None:
    with serve(reply(410)) as hook:
        attempt = send(hook.url)
    assert (attempt.ok, attempt.gone, attempt.status_code) == (False, True, 410)


def test_a_host_resolving_to_a_refused_address_is_gone_unsent() -> None:
    # Given a receiver reached by a name that resolves to loopback, which is not allowed
    with serve(reply(200)) as hook:
        # When one attempt is sent
        attempt = send(hook.url.replace("127.0.0.1", "localhost"), allowed=[])
    # Then nothing was sent and no retry is asked for: the refusal is permanent
    assert (attempt.ok, attempt.gone, attempt.status_code) == (False, True, None)
    assert attempt.error is not None and "loopback" in attempt.error
    assert hook.received == []


def test_a_redirect_is_a_failure_and_its_location_is_never_requested() -> None:
    # Given a receiver that redirects to a second loopback server
    with serve(reply(200)) as target, \
            serve(reply(302, {"Location": f"{target.url}/stolen"})) as hook:
        # When one attempt is sent
        attempt = send(hook.url)
    # Then it failed, saying why, and the second server got nothing
    assert (attempt.ok, attempt.status_code) == (False, 302)
    assert attempt.error is not None
    assert "302" in attempt.error and "redirects are not followed" in attempt.error
    assert len(hook.received) == 1
    assert target.received == []


def test_loopback_without_an_allow_list_is_refused_and_nothing_is_sent() -> None:
    with serve(reply(200)) as hook:
        attempt = send(f"{hook.url}/hook", allowed=[])
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert attempt.error == ("refused: 127.0.0.1 is a loopback address; "
                             "allow it with CALLBACK_ALLOWED_NETWORKS")
    assert hook.received == []


@contextmanager
def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> Iterator[list[str]]:
    """Answer getaddrinfo for `names` from the table, every other name as usual; log lookups."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in names:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port)) for ip in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked


def test_a_name_is_resolved_once_and_the_checked_address_is_what_is_connected_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a name only the fake resolver knows, pointing at the loopback receiver
    with fake_dns(monkeypatch, {"hooks.test": ["127.0.0.1"]}) as asked, \
            serve(reply(200)) as hook:
        # When one attempt is sent to it
        attempt = send(f"http://hooks.test:{hook.port}/hook")
    # Then it was resolved once, and the request reached 127.0.0.1 keeping the original Host
    assert attempt.ok, attempt.error
    assert asked == ["hooks.test"]
    assert hook.received[0].headers["host"] == f"hooks.test:{hook.port}"


def test_a_kept_alive_connection_only_carries_requests_for_its_own_host_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two names for the same loopback receiver, which keeps connections open
    peers: list[tuple[str, int]] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        peers.append((handler.headers["host"].split(":")[0], handler.client_address[1]))
        reply(204, body=b"")(handler)

    with fake_dns(monkeypatch, {"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]}), \
            serve(answer, keep_alive=True) as hook:
        clients = netguard.Clients()
        # When attempts go to one name, the other, and the first again, through pooled clients
        for name in ("a.test", "a.test", "b.test", "a.test", "b.test"):
            assert send(f"http://{name}:{hook.port}/hook", clients=clients).ok
        clients.close()
    # Then each name kept one connection, and none was used for the other name (TLS is
    # verified per name: a connection opened for one must never carry another's request)
    by_name = {name: {port for n, port in peers if n == name} for name in ("a.test", "b.test")}
    assert len(by_name["a.test"]) == 1 and len(by_name["b.test"]) == 1, peers
    assert by_name["a.test"].isdisjoint(by_name["b.test"])


def test_a_pooled_request_is_checked_again_and_refused_when_the_name_moves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a pooled connection to a name that then resolves to a private address too
    names = {"moves.test": ["127.0.0.1"]}
    with fake_dns(monkeypatch, names), serve(reply(204, body=b""), keep_alive=True) as hook:
        clients = netguard.Clients()
        assert send(f"http://moves.test:{hook.port}/hook", clients=clients).ok
        names["moves.test"] = ["127.0.0.1", "10.0.0.5"]
        # When the next attempt is made through the same pool
        attempt = send(f"http://moves.test:{hook.port}/hook", clients=clients)
        clients.close()
    # Then the guard refuses it although a checked connection is open, and nothing is sent
    assert attempt.gone and attempt.error is not None and "10.0.0.5" in attempt.error
    assert len(hook.received) == 1


def test_a_name_with_any_refused_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a name resolving to a public and a private address
    with fake_dns(monkeypatch, {"rebind.test": ["127.0.0.1", "10.0.0.5"]}), \
            serve(reply(200)) as hook:
        attempt = send(f"http://rebind.test:{hook.port}/hook")
    # Then the attempt is refused for the private one and nothing is sent
    assert attempt.error == ("refused: 10.0.0.5 is a private address; "
                             "allow it with CALLBACK_ALLOWED_NETWORKS")
    assert hook.received == []


def test_an_unknown_scheme_is_refused_without_a_request() -> None:
    attempt = send("ftp://127.0.0.1/hook")
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("refused:")


def test_a_closed_port_is_an_error_not_an_exception() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempt = send(f"http://127.0.0.1:{port}/hook")
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert attempt.error is not None and attempt.error.startswith("connection failed")


def test_a_receiver_slower_than_the_timeout_is_a_timeout() -> None:
    # Given a receiver that answers only after 3 s
    release = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        release.wait(3)
        reply(200)(handler)

    with serve(slow) as hook:
        # When an attempt may take 0.5 s
        started = time.monotonic()
        attempt = send(hook.url, timeout=0.5)
        elapsed = time.monotonic() - started
        release.set()
    # Then it gives up in time and says so
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert attempt.error is not None and "timeout" in attempt.error
    assert elapsed < 2


def test_a_huge_response_body_is_read_only_up_to_the_cap() -> None:
    # Given a receiver that announces 1 GB and streams until the client hangs up
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-length", str(1 << 30))
        handler.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range((1 << 30) // len(chunk)):
                handler.wfile.write(chunk)
        except OSError:
            return

    with serve(endless) as hook:
        started = time.monotonic()
        attempt = send(hook.url, cap=1000, timeout=10)
    # Then the attempt is ok, returns fast and keeps exactly the cap
    assert attempt.ok, attempt.error
    assert attempt.response_body == "x" * 1000
    assert time.monotonic() - started < 5


# --- TLS: connect to the checked IP, verify the certificate for the name ----------------------


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _certificates(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf certificate for DNS `name`, made with the openssl CLI."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", tmp / "ca.key", "-out", tmp / "ca.pem",
             "-days", "1", "-subj", "/CN=test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")
    _openssl("req", *ec, "-keyout", tmp / "leaf.key", "-out", tmp / "leaf.csr",
             "-subj", f"/CN={name}")
    (tmp / "ext").write_text(f"subjectAltName=DNS:{name}\n")
    _openssl("x509", "-req", "-in", tmp / "leaf.csr", "-CA", tmp / "ca.pem",
             "-CAkey", tmp / "ca.key", "-CAcreateserial", "-out", tmp / "leaf.pem",
             "-days", "1", "-extfile", tmp / "ext")
    return tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"


def _tls(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca, cert, key = _certificates(tmp, name)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(ca))


def test_https_sends_sni_and_verifies_the_certificate_for_the_hostname(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an HTTPS receiver with a certificate for hooks.test, which resolves to loopback
    server_tls, client_tls = _tls(tmp_path, "hooks.test")
    with fake_dns(monkeypatch, {"hooks.test": ["127.0.0.1"]}), \
            serve(reply(200), tls=server_tls) as hook:
        # When one attempt is sent to the name
        attempt = send(f"https://hooks.test:{hook.port}/hook", ssl_context=client_tls)
    # Then TLS named hooks.test (SNI), the certificate verified for it, and Host kept the name
    assert attempt.ok, attempt.error
    assert hook.sni == ["hooks.test"]
    assert hook.received[0].headers["host"] == f"hooks.test:{hook.port}"


def test_https_refuses_a_certificate_for_another_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an HTTPS receiver whose certificate names someone else
    server_tls, client_tls = _tls(tmp_path, "other.test")
    with fake_dns(monkeypatch, {"hooks.test": ["127.0.0.1"]}), \
            serve(reply(200), tls=server_tls) as hook:
        attempt = send(f"https://hooks.test:{hook.port}/hook", ssl_context=client_tls)
    # Then the attempt fails on verification and nothing is sent
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert attempt.error is not None and "CERTIFICATE_VERIFY_FAILED" in attempt.error
    assert hook.received == []


@pytest.mark.parametrize("url", ["http://" + "a" * 3000 + ".com/", "http://a..b.example/"],
                         ids=["label-too-long", "empty-label"])
def test_a_host_no_resolver_accepts_is_a_failed_attempt_not_an_exception(url: str) -> None:
    # Given a callback URL stored before hosts were checked at submit
    # When one attempt is made
    attempt = send(url, allowed=[])
    # Then it is a failed attempt that says why, and nothing was raised
    assert not attempt.ok and attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("invalid callback URL")
