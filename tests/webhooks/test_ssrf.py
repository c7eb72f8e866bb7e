"""The address and URL policy: every refused range in both families (and IPv4 hidden inside IPv6), the URL
checks done at submit time, and a resolution that is done once and refused if any answer is internal."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from chorus.webhooks.ssrf import Target, WebhookPolicy, WebhookURLError, blocked_reason, check_url, resolve

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def teredo(server: str, client: str) -> str:
    """A Teredo address: 2001:0:<server>:<flags>:<port ^ 0xffff>:<client ^ 0xffffffff>."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0xFFFF << 32)
    return str(ipaddress.IPv6Address(value | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)))


BLOCKED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this-network"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.200", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.0.0.8", "ietf-protocol"),
    ("192.0.0.170", "ietf-protocol"),
    ("192.88.99.1", "6to4-relay"),
    # Cloud metadata services
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("192.0.0.192", "metadata"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("3fff:fff:ffff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "discard-only"),
    ("2001:10::1", "ietf-protocol"),
    ("4000::1", "reserved"),
    ("1234::1", "reserved"),
    # IPv4-mapped ::ffff:a.b.c.d: judged by the IPv4 address
    ("::ffff:127.0.0.1", "ipv4-mapped loopback"),
    ("::ffff:10.1.2.3", "ipv4-mapped private"),
    ("::ffff:169.254.169.254", "ipv4-mapped metadata"),
    ("::ffff:100.64.0.1", "ipv4-mapped cgnat"),
    ("::ffff:0.0.0.0", "ipv4-mapped unspecified"),
    # IPv4-compatible ::a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d: the whole prefixes
    ("::127.0.0.1", "ipv4-compatible"),
    ("::10.0.0.1", "ipv4-compatible"),
    ("::8.8.8.8", "ipv4-compatible"),
    ("::ffff:0:127.0.0.1", "ipv4-translated"),
    ("::ffff:0:169.254.169.254", "ipv4-translated"),
    # 6to4 2002:AABB:CCDD::/48: judged by the IPv4 address in bits 16-48
    ("2002:7f00:1::1", "6to4 loopback"),
    ("2002:a9fe:a9fe::", "6to4 metadata"),
    ("2002:c0a8:101::1", "6to4 private"),
    # NAT64 64:ff9b::/96 judged by its IPv4 address; local-use 64:ff9b:1::/48 refused whole
    ("64:ff9b::127.0.0.1", "nat64 loopback"),
    ("64:ff9b::10.0.0.1", "nat64 private"),
    ("64:ff9b::169.254.169.254", "nat64 metadata"),
    ("64:ff9b:1::8.8.8.8", "nat64-local"),
    # Teredo 2001::/32: judged by server and (XORed) client IPv4 addresses
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "teredo loopback"),
    (teredo("65.54.227.120", "192.168.0.1"), "teredo private"),
    (teredo("65.54.227.120", "169.254.169.254"), "teredo metadata"),
    (teredo("10.0.0.1", "8.8.8.8"), "teredo private"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "169.253.255.255",
    "198.17.255.255",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",  # DNS64's answer for an IPv4-only host, on an IPv6-only server
    "2002:808:808::1",
    teredo("65.54.227.120", "8.8.8.8"),
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_addresses(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_the_teredo_helper_matches_the_rfc_example() -> None:
    # RFC 4380 section 4: server 65.54.227.120, client 192.0.2.45 (mapped 3fff:fdd2), flags 0x8000, port 40000.
    assert ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2").teredo == (
        ipaddress.IPv4Address("65.54.227.120"),
        ipaddress.IPv4Address("192.0.2.45"),
    )
    assert blocked_reason(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == "teredo documentation"


PUBLIC_POLICY = WebhookPolicy()
ALLOWED = WebhookPolicy(allow_hosts=frozenset({"Receiver.Corp.Example.", "127.0.0.1", "[::1]", "metadata"}))


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("https://hooks.example.com/webhook", PUBLIC_POLICY),
        ("https://hooks.example.com", PUBLIC_POLICY),
        ("https://hooks.example.com:8443/a/b?c=d&e=f#fragment", PUBLIC_POLICY),
        ("HTTPS://HOOKS.Example.COM./x", PUBLIC_POLICY),
        ("https://8.8.8.8/hook", PUBLIC_POLICY),
        ("https://[2606:4700:4700::1111]:443/hook", PUBLIC_POLICY),
        ("https://xn--bcher-kva.example/hook", PUBLIC_POLICY),
        ("https://under_score.example.com/", PUBLIC_POLICY),
        # Allow-listed: http, internal names and addresses are fine.
        ("http://receiver.corp.example/hook", ALLOWED),
        ("http://127.0.0.1:8080/hook", ALLOWED),
        ("http://[::1]:8080/hook", ALLOWED),
        ("http://[0:0::1]/hook", ALLOWED),
        ("http://metadata/", ALLOWED),
    ],
)
def test_acceptable_urls(url: str, policy: WebhookPolicy) -> None:
    check_url(url, policy)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/hook", "scheme_not_allowed"),
        ("ftp://hooks.example.com/hook", "scheme_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme_not_allowed"),
        ("//hooks.example.com/hook", "scheme_not_allowed"),
        ("hooks.example.com/hook", "scheme_not_allowed"),
        ("https:///hook", "invalid_url"),
        ("https://", "invalid_url"),
        ("https://user:pass@hooks.example.com/", "credentials_in_url"),
        ("https://hooks.example.com@127.0.0.1/", "credentials_in_url"),
        ("https://hooks.example.com:0/", "bad_port"),
        ("https://hooks.example.com:65536/", "bad_port"),
        ("https://hooks.example.com:http/", "bad_port"),
        ("https://hooks.example.com:+443/", "bad_port"),
        ("https://127.0.0.1/hook", "blocked_address"),
        ("https://10.0.0.1/hook", "blocked_address"),
        ("https://169.254.169.254/latest/meta-data/", "blocked_address"),
        ("https://[::1]/hook", "blocked_address"),
        ("https://[::ffff:127.0.0.1]/hook", "blocked_address"),
        ("https://[::ffff:7f00:1]/hook", "blocked_address"),
        ("https://[fd00:ec2::254]/", "blocked_address"),
        ("https://[64:ff9b::a9fe:a9fe]/", "blocked_address"),
        ("https://localhost/hook", "blocked_host"),
        ("https://LOCALHOST./hook", "blocked_host"),
        ("https://api.localhost/hook", "blocked_host"),
        ("https://metadata.google.internal/computeMetadata/v1/", "blocked_host"),
        ("https://db.internal/", "blocked_host"),
        ("https://printer.local/", "blocked_host"),
        ("https://router.home.arpa/", "blocked_host"),
        ("https://metadata/", "blocked_host"),
        ("https://intranet/", "blocked_host"),
        # Numeric hosts that getaddrinfo would read as 127.0.0.1 but ipaddress does not.
        ("https://127.1/", "invalid_url"),
        ("https://2130706433/", "invalid_url"),
        ("https://0x7f000001/", "invalid_url"),
        ("https://0x7f.0.0.1/", "invalid_url"),
        ("https://017700000001/", "invalid_url"),
        ("https://[v1.fe]/", "invalid_url"),
        ("https://[fe80::1%25eth0]/", "invalid_url"),
        ("https://-bad.example.com/", "invalid_url"),
        ("https://bad..example.com/", "invalid_url"),
        ("https://hooks.example.com\\@127.0.0.1/", "invalid_url"),
        ("https://hooks.example.com/ /x", "invalid_url"),
        ("https://hooks.exam\tple.com/", "invalid_url"),
        ("https://hooks.example.com/\n", "invalid_url"),
        (" https://hooks.example.com/", "invalid_url"),
        ("https://bücher.example/", "invalid_url"),
        ("https://hooks.example.com/" + "a" * 2048, "invalid_url"),
        ("https://" + "a" * 64 + ".example.com/", "invalid_url"),
    ],
)
def test_refused_urls(url: str, code: str) -> None:
    with pytest.raises(WebhookURLError) as caught:
        check_url(url, PUBLIC_POLICY)
    assert caught.value.code == code
    assert str(caught.value)  # a message a customer can act on


def test_allow_listing_is_exact() -> None:
    policy = WebhookPolicy(allow_hosts=frozenset({"receiver.corp.example", "127.0.0.1"}))
    check_url("http://receiver.corp.example/", policy)
    for url in ("http://sub.receiver.corp.example/", "http://127.0.0.2/", "http://corp.example/"):
        with pytest.raises(WebhookURLError):
            check_url(url, policy)


class Resolver:
    """An injected resolver that answers from a script and records its calls."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        return self.answers.pop(0)


def test_resolve_pins_the_first_address_of_one_lookup() -> None:
    resolver = Resolver(["93.184.216.34", "2606:2800:220:1::1"], ["10.0.0.1"])
    target = run(resolve("https://Hooks.Example.com:8443/a/b?c=1#frag", WebhookPolicy(resolver=resolver)))
    assert target == Target(
        url="https://Hooks.Example.com:8443/a/b?c=1#frag",
        scheme="https",
        host="hooks.example.com",
        port=8443,
        ip="93.184.216.34",
        path_and_query="/a/b?c=1",
    )
    assert target.pinned_url == "https://93.184.216.34:8443/a/b?c=1"
    assert target.host_header == "hooks.example.com:8443"
    assert resolver.calls == [("hooks.example.com", 8443)]


def test_resolve_brackets_ipv6_and_drops_the_default_port() -> None:
    target = run(resolve("https://hooks.example.com", WebhookPolicy(resolver=Resolver(["2606:2800:220:1::1"]))))
    assert target.pinned_url == "https://[2606:2800:220:1::1]:443/"
    assert target.host_header == "hooks.example.com"


@pytest.mark.parametrize(
    "answers",
    [
        ["8.8.8.8", "10.0.0.1"],
        ["8.8.8.8", "127.0.0.1"],
        ["2606:4700:4700::1111", "::ffff:169.254.169.254"],
        ["8.8.8.8", "fd00:ec2::254"],
        ["127.0.0.1"],
    ],
)
def test_any_internal_answer_refuses_the_host(answers: list[str]) -> None:
    with pytest.raises(WebhookURLError) as caught:
        run(resolve("https://rebind.example.com/", WebhookPolicy(resolver=Resolver(answers))))
    assert caught.value.code == "blocked_address"


def test_an_allow_listed_host_may_resolve_internally() -> None:
    policy = WebhookPolicy(allow_hosts=frozenset({"receiver.corp.example"}), resolver=Resolver(["10.1.2.3"]))
    assert run(resolve("http://receiver.corp.example/hook", policy)).ip == "10.1.2.3"


def test_an_ip_literal_is_not_looked_up() -> None:
    resolver = Resolver()
    target = run(resolve("https://[2606:4700:4700::1111]/hook", WebhookPolicy(resolver=resolver)))
    assert target.ip == "2606:4700:4700::1111"
    assert target.host_header == "[2606:4700:4700::1111]"
    assert resolver.calls == []


def test_resolve_checks_the_url_first() -> None:
    resolver = Resolver(["8.8.8.8"])
    with pytest.raises(WebhookURLError) as caught:
        run(resolve("http://hooks.example.com/", WebhookPolicy(resolver=resolver)))
    assert caught.value.code == "scheme_not_allowed"
    assert resolver.calls == []


def fails(host: str, port: int) -> Sequence[str]:
    raise OSError("Name or service not known")


@pytest.mark.parametrize("resolver", [fails, Resolver([]), Resolver(["not-an-address"])])
def test_unresolvable(resolver: Any) -> None:
    with pytest.raises(WebhookURLError) as caught:
        run(resolve("https://nowhere.example.com/", WebhookPolicy(resolver=resolver)))
    assert caught.value.code == "unresolvable"


def test_a_hanging_lookup_is_bounded_by_the_connect_timeout() -> None:
    def hangs(host: str, port: int) -> Sequence[str]:
        time.sleep(0.6)  # a thread cannot be interrupted: resolve stops waiting for it instead
        return ["8.8.8.8"]

    async def scenario() -> tuple[str, float]:
        started = time.monotonic()
        try:
            await resolve("https://slow.example.com/", WebhookPolicy(resolver=hangs, connect_timeout_s=0.1))
        except WebhookURLError as exc:
            return exc.code, time.monotonic() - started
        raise AssertionError("resolved")

    code, elapsed = run(scenario())
    assert code == "unresolvable"
    assert elapsed < 0.5


def test_the_system_resolver_is_the_default() -> None:
    # "localhost" is allow-listed here only to exercise getaddrinfo without any network.
    target = run(resolve("http://localhost:9/", WebhookPolicy(allow_hosts=frozenset({"localhost"}))))
    assert ipaddress.ip_address(target.ip).is_loopback
