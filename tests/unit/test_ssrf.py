"""The SSRF guard: which addresses a callback may reach, and what submit refuses."""

import ipaddress

import pytest

from adapters.netguard import (
    ALLOW_HINT,
    check_url_at_submit,
    host_problem,
    parse_networks,
    refusal,
    tenant_of_upstream,
    tenant_upstream,
)
from core.errors import RefusedTarget

NONE: list[str] = []
LOOPBACK = ["127.0.0.0/8"]

VIA_LOOPBACK = "a loopback address (it reaches 127.0.0.1)"
VIA_PRIVATE = "a private address (it reaches 10.0.0.1)"

CASES = [
    # (address, allow-list, why it is refused: None when it is not)
    pytest.param("127.0.0.1", NONE, "a loopback address", id="loopback"),
    pytest.param("10.1.2.3", NONE, "a private address", id="private-10"),
    pytest.param("172.16.0.1", NONE, "a private address", id="private-172.16"),
    pytest.param("192.168.1.1", NONE, "a private address", id="private-192.168"),
    pytest.param("169.254.169.254", NONE, "a link-local address", id="link-local-metadata"),
    pytest.param("100.64.0.1", NONE, "a shared (CGNAT) address", id="cgnat"),
    pytest.param("0.0.0.0", NONE, "an unspecified address", id="unspecified-v4"),
    pytest.param("0.1.2.3", NONE, "a 'this network' (0.0.0.0/8) address", id="this-network"),
    pytest.param("224.0.0.1", NONE, "a multicast address", id="multicast-v4"),
    pytest.param("240.0.0.1", NONE, "a private address", id="reserved-v4"),
    pytest.param("255.255.255.255", NONE, "a private address", id="broadcast"),
    pytest.param("::", NONE, "an unspecified address", id="unspecified-v6"),
    pytest.param("::1", NONE, "a loopback address", id="loopback-v6"),
    pytest.param("fe80::1", NONE, "a link-local address", id="link-local-v6"),
    pytest.param("fc00::1", NONE, "a unique-local address", id="unique-local-fc"),
    pytest.param("fd12:3456::1", NONE, "a unique-local address", id="unique-local-fd"),
    pytest.param("ff02::1", NONE, "a multicast address", id="multicast-v6"),
    pytest.param("::ffff:127.0.0.1", NONE, VIA_LOOPBACK, id="mapped-loopback"),
    pytest.param("::ffff:10.0.0.1", NONE, VIA_PRIVATE, id="mapped-private"),
    pytest.param("64:ff9b::a00:1", NONE, VIA_PRIVATE, id="nat64-private"),
    pytest.param("2002:a00:1::1", NONE, VIA_PRIVATE, id="6to4-private"),
    pytest.param("4000::1", NONE, "a reserved address", id="reserved-v6"),
    pytest.param("198.18.0.1", NONE, "a private address", id="benchmarking"),
    pytest.param("2001:db8::1", NONE, "a private address", id="documentation-v6"),
    pytest.param("8.8.8.8", NONE, None, id="public-google"),
    pytest.param("1.1.1.1", NONE, None, id="public-cloudflare"),
    pytest.param("2606:4700:4700::1111", NONE, None, id="public-v6"),
    pytest.param("::ffff:8.8.8.8", NONE, None, id="mapped-public"),
    pytest.param("64:ff9b::808:808", NONE, None, id="nat64-public"),
    pytest.param("127.0.0.1", LOOPBACK, None, id="loopback-allowed"),
    pytest.param("::ffff:127.0.0.1", LOOPBACK, None, id="mapped-loopback-allowed"),
    pytest.param("127.0.0.1", ["10.0.0.0/8"], 'a loopback address', id="loopback-other-allowed"),
    pytest.param("::1", LOOPBACK, 'a loopback address', id="v6-loopback-not-in-v4-allow"),
    pytest.param("::1", ["::1/128"], None, id="v6-loopback-allowed"),
]


@pytest.mark.parametrize(("address", "allowed", "kind"), CASES)
def test_each_refusal_gives_its_reason(address: str, allowed: list[str], kind: str | None) -> None:
    # Given an address and an allow-list
    ip, networks = ipaddress.ip_address(address), parse_networks(allowed)
    # When a callback would connect to it
    reason = refusal(ip, networks)
    # Then it is refused for exactly the expected reason (so a fallback check that stops
    # working is caught, not covered by the next one), or allowed
    assert reason == (f"refused: {ip} is {kind}; {ALLOW_HINT}" if kind else None)


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


@pytest.mark.parametrize(("url", "why"), [
    pytest.param("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback", id="loopback"),
    pytest.param("https://[::1]/hook", "::1 is a loopback", id="loopback-v6"),
    pytest.param("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local",
                 id="metadata"),
    pytest.param("http://[::ffff:10.0.0.1]/hook", "is a private address (it reaches 10.0.0.1)",
                 id="mapped-private"),
    pytest.param("http://127.1/hook", "127.0.0.1 is a loopback", id="short-form-loopback"),
    pytest.param("http://2130706433/hook", "127.0.0.1 is a loopback", id="decimal-loopback"),
    pytest.param("http://0x7f000001/hook", "127.0.0.1 is a loopback", id="hex-loopback"),
])
def test_submit_refuses_a_literal_refused_address(url: str, why: str) -> None:
    # Given a callback URL whose host is a refused address, in any spelling
    # When it is checked at submit
    with pytest.raises(RefusedTarget) as info:
        check_url_at_submit(url, [])
    # Then it is refused for that address's own reason
    assert str(info.value).startswith("callback_url refused: ")
    assert why in str(info.value) and info.value.field == "callback_url"


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


@pytest.mark.parametrize(("url", "name"), [
    ("http://Example.com/x", "http:ten_a:example.com:80"),
    ("https://example.com/x", "http:ten_a:example.com:443"),
    ("http://127.0.0.1:8080/x", "http:ten_a:127.0.0.1:8080"),
    ("http://[::1]:9/x", "http:ten_a:[::1]:9"),
], ids=["default-http-port", "default-https-port", "explicit-port", "ipv6"])
def test_a_tenant_supplied_upstream_is_named_by_tenant_host_and_port(url: str,
                                                                     name: str) -> None:
    assert tenant_upstream("http:", "ten_a", url) == name
    assert tenant_of_upstream("http:", name) == "ten_a"
    assert tenant_upstream("http:", "ten_b", url) != name


def test_a_shared_upstream_belongs_to_no_tenant() -> None:
    assert tenant_of_upstream("http:", "llm:api.openai.com") is None
    assert tenant_of_upstream("callback:", "callback:example.com") is None
