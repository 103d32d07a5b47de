"""The SSRF guard: which addresses a callback may reach, and what submit refuses."""

import ipaddress

import pytest

from adapters.callbacks import (
    check_url_at_submit,
    host_problem,
    is_refused,
    parse_networks,
    refusal,
)
from core.errors import RefusedTarget

NONE: list[str] = []
LOOPBACK = ["127.0.0.0/8"]

CASES = [
    # (address, allow-list, refused)
    pytest.param("127.0.0.1", NONE, True, id="loopback"),
    pytest.param("10.1.2.3", NONE, True, id="private-10"),
    pytest.param("172.16.0.1", NONE, True, id="private-172.16"),
    pytest.param("192.168.1.1", NONE, True, id="private-192.168"),
    pytest.param("169.254.169.254", NONE, True, id="link-local-metadata"),
    pytest.param("100.64.0.1", NONE, True, id="cgnat"),
    pytest.param("0.0.0.0", NONE, True, id="unspecified-v4"),
    pytest.param("0.1.2.3", NONE, True, id="this-network"),
    pytest.param("224.0.0.1", NONE, True, id="multicast-v4"),
    pytest.param("240.0.0.1", NONE, True, id="reserved-v4"),
    pytest.param("255.255.255.255", NONE, True, id="broadcast"),
    pytest.param("::", NONE, True, id="unspecified-v6"),
    pytest.param("::1", NONE, True, id="loopback-v6"),
    pytest.param("fe80::1", NONE, True, id="link-local-v6"),
    pytest.param("fc00::1", NONE, True, id="unique-local-fc"),
    pytest.param("fd12:3456::1", NONE, True, id="unique-local-fd"),
    pytest.param("ff02::1", NONE, True, id="multicast-v6"),
    pytest.param("::ffff:127.0.0.1", NONE, True, id="mapped-loopback"),
    pytest.param("::ffff:10.0.0.1", NONE, True, id="mapped-private"),
    pytest.param("64:ff9b::a00:1", NONE, True, id="nat64-private"),
    pytest.param("2002:a00:1::1", NONE, True, id="6to4-private"),
    pytest.param("8.8.8.8", NONE, False, id="public-google"),
    pytest.param("1.1.1.1", NONE, False, id="public-cloudflare"),
    pytest.param("2606:4700:4700::1111", NONE, False, id="public-v6"),
    pytest.param("::ffff:8.8.8.8", NONE, False, id="mapped-public"),
    pytest.param("64:ff9b::808:808", NONE, False, id="nat64-public"),
    pytest.param("127.0.0.1", LOOPBACK, False, id="loopback-allowed"),
    pytest.param("::ffff:127.0.0.1", LOOPBACK, False, id="mapped-loopback-allowed"),
    pytest.param("127.0.0.1", ["10.0.0.0/8"], True, id="loopback-other-allowed"),
    pytest.param("::1", LOOPBACK, True, id="v6-loopback-not-in-v4-allow"),
    pytest.param("::1", ["::1/128"], False, id="v6-loopback-allowed"),
]


@pytest.mark.parametrize(("address", "allowed", "refused"), CASES)
def test_addresses(address: str, allowed: list[str], refused: bool) -> None:
    assert is_refused(ipaddress.ip_address(address), parse_networks(allowed)) is refused


def test_the_refusal_names_the_address_its_kind_and_the_setting() -> None:
    reason = refusal(ipaddress.ip_address("10.0.0.5"), [])
    assert reason == ("refused: 10.0.0.5 is a private address; "
                      "allow it with CALLBACK_ALLOWED_NETWORKS")


def test_parse_networks_ignores_host_bits_and_rejects_garbage() -> None:
    assert parse_networks(["127.0.0.1/8", " ::1/128 "]) == [
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    with pytest.raises(ValueError):
        parse_networks(["not-a-network"])


@pytest.mark.parametrize("url", [
    pytest.param("ftp://example.com/hook", id="ftp"),
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("gopher://example.com/", id="gopher"),
])
def test_submit_refuses_other_schemes(url: str) -> None:
    with pytest.raises(RefusedTarget, match="http or https") as info:
        check_url_at_submit(url, [])
    assert info.value.field == "callback_url"


@pytest.mark.parametrize("url", [
    pytest.param("http://127.0.0.1:8080/hook", id="loopback"),
    pytest.param("https://[::1]/hook", id="loopback-v6"),
    pytest.param("http://169.254.169.254/latest/meta-data", id="metadata"),
    pytest.param("http://[::ffff:10.0.0.1]/hook", id="mapped-private"),
    pytest.param("http://127.1/hook", id="short-form-loopback"),
    pytest.param("http://2130706433/hook", id="decimal-loopback"),
    pytest.param("http://0x7f000001/hook", id="hex-loopback"),
])
def test_submit_refuses_a_literal_refused_address(url: str) -> None:
    with pytest.raises(RefusedTarget, match="refused: .* is a") as info:
        check_url_at_submit(url, [])
    assert info.value.field == "callback_url"


def test_submit_accepts_a_literal_address_in_the_allow_list() -> None:
    check_url_at_submit("http://127.0.0.1:8080/hook", parse_networks(["127.0.0.1/32"]))


def test_submit_does_not_resolve_hostnames(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given DNS that would fail the test if it were asked
    def no_dns(*_: object, **__: object) -> None:
        raise AssertionError("hostnames must not be resolved at submit time")

    monkeypatch.setattr("socket.getaddrinfo", no_dns)
    # Then a hostname (even one that is loopback in DNS) and a public literal pass
    check_url_at_submit("http://localhost:8080/hook", [])
    check_url_at_submit("https://hooks.example.com/x", [])
    check_url_at_submit("https://8.8.8.8/x", [])


def test_submit_refuses_a_url_without_a_host() -> None:
    with pytest.raises(RefusedTarget, match="no host"):
        check_url_at_submit("http:///hook", [])


@pytest.mark.parametrize(("url", "reason"), [
    pytest.param("http://" + "a" * 3000 + ".com/", "a label is empty or over 63", id="long-label"),
    pytest.param("http://" + "a." * 130 + "com/", "over 253 characters", id="long-name"),
    pytest.param("http://-bad.example.com/", "label '-bad'", id="leading-hyphen"),
    pytest.param("http://a..b.example.com/", "a label is empty", id="empty-label"),
])
def test_submit_refuses_a_host_that_is_not_a_valid_name(url: str, reason: str) -> None:
    # Given a callback URL whose host no resolver would accept
    # When it is checked at submit
    with pytest.raises(RefusedTarget, match="is not a valid host name") as info:
        check_url_at_submit(url, [])
    # Then it is refused for that reason, without echoing thousands of characters
    assert reason in str(info.value)
    assert info.value.field == "callback_url" and len(str(info.value)) < 300


@pytest.mark.parametrize("host", ["hooks.example.com", "xn--bcher-kva.de", "bücher.de",
                                  "in_ternal.example", "example.com.", "8.8.8.8", "2001:db8::1"])
def test_valid_host_names_and_addresses_have_no_problem(host: str) -> None:
    assert host_problem(host) is None
