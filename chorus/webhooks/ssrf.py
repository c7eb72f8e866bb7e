"""Which webhook URLs chorus may POST to, and the one address it will connect to for each.

A webhook URL is chosen by a customer, so without a policy any customer could make the server send requests to
its own network: the cloud metadata service (credentials), databases, admin ports, other tenants. The rules:

* ``check_url`` (at submit time) is purely syntactic: an absolute https URL, no credentials, a sane port, a
  hostname that is not obviously internal (``localhost``, ``*.internal``, single labels that the server's DNS
  search domains would complete), and an IP literal only if it is public.
* ``resolve`` (at delivery time) resolves the hostname ONCE and refuses it if ANY of its addresses is not public:
  an attacker's DNS can answer with a mix, and the connecting code could pick either. The delivery then connects
  to the pinned address without a second lookup, so a DNS answer that changes between the check and the
  connection (DNS rebinding) cannot redirect it.
* An administrator's ``allow_hosts`` lifts both the https requirement and the address rules for exact hostnames
  or IP literals: an internal receiver on a private network, or the tests' receiver on 127.0.0.1.

Address rules are an explicit table rather than ``ipaddress``'s ``is_private``/``is_global``: those changed
meaning across Python releases (3.11.10, 3.12.4 and 3.13 each moved ranges), 100.64.0.0/10 (CGNAT) is neither
private nor global, and nothing there knows the cloud metadata addresses. The stdlib is used where it is plain
bit arithmetic (``ipv4_mapped``, ``sixtofour``, ``teredo``) and as a final backstop (``is_global``) that only
ever refuses more.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Cloud metadata services: listed first so that they are named as such (most also sit inside a range below).
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, DigitalOcean, OpenStack…
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata and credentials
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
}

# Ordered: the first match names the reason, so more specific networks come first.
_BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified"),
    (_V4("0.0.0.0/8"), "this-network"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "cgnat"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "ietf-protocol"),  # DS-Lite, NAT64 discovery, PCP anycast…
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "6to4-relay"),  # deprecated anycast (RFC 7526)
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

# IPv6 forms that carry an IPv4 address are handled in _embedded_v4 before this table.
_BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    # Deprecated IPv4-compatible (RFC 4291) and SIIT IPv4-translated (RFC 6052) forms never reach the Internet:
    # the whole prefixes are refused, whatever IPv4 address they carry.
    (_V6("::/96"), "ipv4-compatible"),
    (_V6("::ffff:0:0:0/96"), "ipv4-translated"),
    # Local-use NAT64 (RFC 8215): the IPv4 address's position depends on a site-chosen prefix length.
    (_V6("64:ff9b:1::/48"), "nat64-local"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("2001::/23"), "ietf-protocol"),  # ORCHID, AMT, AS112…: no webhook receiver lives there
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
)
_GLOBAL_UNICAST_V6 = _V6("2000::/3")  # the only IPv6 unicast space IANA has allocated
_NAT64_V6 = _V6("64:ff9b::/96")

# Names that only ever mean something inside the server's own network. Single-label names are refused too
# (in check_url): resolv.conf search domains would complete "db" into "db.corp.internal".
_BLOCKED_NAMES = {"localhost", "localhost.localdomain"}
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".intranet", ".lan")

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class WebhookURLError(ValueError):
    """A webhook URL chorus will not deliver to; ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WebhookPolicy:
    """What an administrator allows; the defaults suit untrusted customers' URLs on the public Internet.

    ``allow_hosts`` holds exact hostnames or IP literals (no wildcards) that may use http and resolve to
    addresses that are otherwise refused. ``resolver`` maps (host, port) to IP strings; None uses the system's
    ``getaddrinfo`` in a thread. A delivery's whole exchange (DNS, connect, TLS, request, response) is bounded
    by ``connect_timeout_s + read_timeout_s``; each network wait, by its own timeout.
    """

    allow_hosts: frozenset[str] = frozenset()
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_response_bytes: int = 64 * 1024
    resolver: Resolver | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Stored normalised ("Hooks.Example.", "[::1]" → "hooks.example", "::1") so that lookups are exact.
        object.__setattr__(self, "allow_hosts", frozenset(_normalise_host(host) for host in self.allow_hosts))

    def allows(self, host: str) -> bool:
        """Whether ``host`` is allow-listed (compared case-insensitively, IP literals in canonical form)."""
        return _normalise_host(host) in self.allow_hosts


@dataclass(frozen=True)
class Target:
    """A checked URL pinned to one address: connect to ``ip``, but speak HTTP and TLS to ``host``."""

    url: str
    scheme: str
    host: str
    port: int
    ip: str
    path_and_query: str

    @property
    def host_header(self) -> str:
        """The Host header's value: the URL's host, bracketed if IPv6, with its port unless the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def pinned_url(self) -> str:
        """The URL with the pinned address in place of the hostname: what the HTTP client is given."""
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{ip}:{self.port}{self.path_and_query}"


def blocked_reason(ip: IPAddress) -> str | None:
    """Why chorus must not connect to ``ip`` (a short reason such as "loopback"), or None if it is public.

    IPv6 addresses that carry an IPv4 address a network may forward to (mapped, NAT64, 6to4, Teredo) are judged
    by that IPv4 address, so "::ffff:127.0.0.1" is "ipv4-mapped loopback" while "64:ff9b::8.8.8.8" (what DNS64
    gives an IPv6-only server for an IPv4-only customer) is public.
    """
    if ip in _METADATA:
        return "metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            kind, addresses = embedded
            for address in addresses:
                reason = blocked_reason(address)
                if reason is not None:
                    return f"{kind} {reason}"
            return None
        for network6, reason in _BLOCKED_V6:
            if ip in network6:
                return reason
        if ip not in _GLOBAL_UNICAST_V6:
            return "reserved"
    else:
        for network4, reason in _BLOCKED_V4:
            if ip in network4:
                return reason
    # Backstop: whatever this Python's stdlib also knows to be special-purpose.
    return None if ip.is_global else "non-global"


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    """The IPv4 addresses an IPv6 address forwards to, for the forms that are judged by them."""
    if ip.ipv4_mapped is not None:  # ::ffff:0:0/96
        return "ipv4-mapped", (ip.ipv4_mapped,)
    if ip in _NAT64_V6:
        return "nat64", (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:  # 2002::/16, the IPv4 address in bits 16-48
        return "6to4", (ip.sixtofour,)
    if ip.teredo is not None:  # 2001::/32: (server, client); the client is stored XOR 0xffffffff
        return "teredo", ip.teredo
    return None


def check_url(url: str, policy: WebhookPolicy) -> None:
    """Refuse, with a WebhookURLError, a URL that can never be delivered to; resolution is left to ``resolve``.

    Cheap and offline, so the API can reject a bad URL when a job is submitted rather than when it finishes.
    """
    _parse(url, policy)


async def resolve(url: str, policy: WebhookPolicy) -> Target:
    """Check ``url``, resolve its host once, and pin it to the first address; refuse if ANY address is blocked.

    The lookup is bounded by ``policy.connect_timeout_s``; a failed or timed-out lookup is "unresolvable".
    """
    scheme, host, port, path_and_query = _parse(url, policy)
    literal = _ip_literal(host)
    if literal is not None:
        return Target(url, scheme, host, port, str(literal), path_and_query)
    resolver = policy.resolver or _system_resolver
    try:
        answers = await asyncio.wait_for(asyncio.to_thread(resolver, host, port), policy.connect_timeout_s)
    except TimeoutError:
        raise WebhookURLError("unresolvable", f"resolving {host!r} timed out") from None
    except (OSError, UnicodeError) as exc:
        raise WebhookURLError("unresolvable", f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            raise WebhookURLError("unresolvable", f"{host!r} resolved to a non-address {answer!r}") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookURLError("unresolvable", f"{host!r} has no addresses")
    if not policy.allows(host):
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None:
                raise WebhookURLError("blocked_address", f"{host!r} resolves to {address}, which is {reason}")
    return Target(url, scheme, host, port, str(addresses[0]), path_and_query)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _parse(url: str, policy: WebhookPolicy) -> tuple[str, str, int, str]:
    """(scheme, host, port, path_and_query) of an acceptable URL; the host lower-cased, without trailing dot."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError("invalid_url", f"the URL is longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently drops tabs and newlines and treats "\" as data: refuse what other parsers would read
    # differently. ASCII only: internationalised names must be given in punycode (xn--…), paths percent-encoded.
    if not url.isascii() or _FORBIDDEN_CHARS.search(url):
        raise WebhookURLError("invalid_url", "the URL must be ASCII without spaces, control characters or '\\'")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise WebhookURLError("invalid_url", f"not a valid URL: {exc}") from None
    scheme = parts.scheme
    if scheme not in _DEFAULT_PORTS:
        raise WebhookURLError("scheme_not_allowed", f"the URL must start with https:// (not {scheme or 'nothing'})")
    if "@" in parts.netloc:
        raise WebhookURLError("credentials_in_url", "the URL must not hold a user name or password")
    host = parts.hostname
    if not host:
        raise WebhookURLError("invalid_url", "the URL has no host")
    try:
        given_port = parts.port
    except ValueError:
        raise WebhookURLError("bad_port", "the URL's port is not a number from 1 to 65535") from None
    if given_port == 0:
        raise WebhookURLError("bad_port", "the URL's port is not a number from 1 to 65535")
    port = given_port or _DEFAULT_PORTS[scheme]

    if parts.netloc.startswith("["):
        try:
            literal: IPAddress | None = ipaddress.IPv6Address(host)
        except ValueError:
            raise WebhookURLError("invalid_url", f"[{host}] is not an IPv6 address") from None
        if "%" in host:
            raise WebhookURLError("invalid_url", "IPv6 zone identifiers are not allowed")
    else:
        host = host.removesuffix(".")
        literal = _ip_literal(host)
        if literal is None:
            _check_hostname(host)
    allowed = policy.allows(host)
    if scheme != "https" and not allowed:
        raise WebhookURLError("scheme_not_allowed", "the URL must use https")
    if not allowed:
        if literal is not None:
            reason = blocked_reason(literal)
            if reason is not None:
                raise WebhookURLError("blocked_address", f"{literal} is {reason}")
        elif host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES) or "." not in host:
            raise WebhookURLError("blocked_host", f"{host!r} is an internal hostname")
    path_and_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, path_and_query


def _check_hostname(host: str) -> None:
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise WebhookURLError("invalid_url", f"{host!r} is not a valid hostname")
    # "127.1", "0x7f.1" and "2130706433" are IPv4 addresses to getaddrinfo and to browsers (WHATWG: a numeric
    # last label makes the host an IPv4 address), but not to ipaddress; no real hostname ends that way.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise WebhookURLError("invalid_url", f"{host!r} is not a canonical IP address or a hostname")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _normalise_host(host: str) -> str:
    host = host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    literal = _ip_literal(host)
    return host if literal is None else str(literal)
