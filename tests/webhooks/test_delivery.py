"""Delivering to receivers these tests start on 127.0.0.1 (and ::1): the request that arrives, the pinned
address and TLS name checks, refused redirects, bounded time and bounded response size, and the verdicts."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import trustme

from chorus.webhooks import signing
from chorus.webhooks.delivery import USER_AGENT, DeliveryResult, backoff_s, deliver
from chorus.webhooks.ssrf import WebhookPolicy

T = TypeVar("T")
HOST = "hooks.example.test"  # never resolvable by the system: only the tests' injected resolvers know it
BODY = b'{"type":"job.completed","data":{"job_id":"job_1"}}'
LOCAL = WebhookPolicy(allow_hosts=frozenset({"127.0.0.1"}), connect_timeout_s=2.0, read_timeout_s=2.0)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=15))


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[[Request, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


class Receiver:
    """A minimal HTTP/1.1 server for one test: records each request, then lets ``respond`` answer it."""

    def __init__(self, respond: Respond, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None):
        self.respond = respond
        self.host = host
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, self.host, 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            method, target, _ = request_line.split(" ")
            headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, target, headers, body)
            self.requests.append(request)
            await self.respond(request, writer, self.stop)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client gave up, which is what several tests are about
        finally:
            writer.close()


def reply(status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()) -> Respond:
    async def respond(request: Request, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return respond


async def never_answer(request: Request, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    await stop.wait()


async def drip(request: Request, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """One byte of the status line every 50 ms: never idle long enough for a per-read timeout."""
    for byte in b"HTTP/1.1 200 OK\r\n" * 20:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.05)


async def endless_body(request: Request, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    chunk = b"x" * 16384
    for _ in range(1000):  # 16 MB at most, if the client never stopped reading
        writer.write(chunk)
        await writer.drain()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Resolver:
    """Answers ``HOST`` from a script, one answer per call, and records the calls."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        return self.answers.pop(0)


# The request that arrives


def test_the_receiver_gets_the_body_and_verifiable_headers() -> None:
    secret = signing.new_secret()
    sent_headers = signing.headers([secret], "msg_1", int(time.time()), BODY)

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(reply(200, b"thanks")) as receiver:
            url = f"http://127.0.0.1:{receiver.port}/hooks/chorus?tenant=7#ignored"
            return await deliver(url, BODY, sent_headers, LOCAL), receiver

    result, receiver = run(scenario())
    assert result == DeliveryResult(True, 200, None, False, result.elapsed_s, b"thanks", False, "HTTP 200 Whatever")
    [request] = receiver.requests
    assert (request.method, request.target, request.body) == ("POST", "/hooks/chorus?tenant=7", BODY)
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["content-type"] == "application/json"
    assert signing.verify(secret, request.headers, request.body)


def test_caller_headers_override_defaults_but_not_host() -> None:
    async def scenario() -> Receiver:
        async with Receiver(reply(204)) as receiver:
            headers = {"content-type": "application/cloudevents+json", "Host": "evil.example"}
            assert (await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, headers, LOCAL)).ok
            return receiver

    receiver = run(scenario())
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"


# Pinning: one lookup, and the connection goes to its answer


def test_the_hostname_is_resolved_once_and_the_pinned_address_used() -> None:
    # If anything looked the name up again it would get 127.0.0.2 (where nothing listens) from this resolver,
    # or nothing at all from the system's.
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
    policy = WebhookPolicy(allow_hosts=frozenset({HOST}), resolver=resolver)

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(reply(200)) as receiver:
            return await deliver(f"http://{HOST}:{receiver.port}/hook", BODY, {}, policy), receiver

    result, receiver = run(scenario())
    assert result.ok, result
    assert resolver.calls == [(HOST, receiver.port)]
    assert receiver.requests[0].headers["host"] == f"{HOST}:{receiver.port}"


def test_an_ipv6_pinned_address() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    resolver = Resolver(["::1"])
    policy = WebhookPolicy(allow_hosts=frozenset({HOST}), resolver=resolver)

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(reply(200), host="::1") as receiver:
            return await deliver(f"http://{HOST}:{receiver.port}/v6", BODY, {}, policy), receiver

    try:
        result, receiver = run(scenario())
    except OSError as exc:  # ::1 not configured in this container
        pytest.skip(f"no IPv6 loopback: {exc}")
    assert result.ok, result
    assert receiver.requests[0].headers["host"] == f"{HOST}:{receiver.port}"


def test_a_mix_of_public_and_private_answers_is_refused_without_connecting() -> None:
    resolver = Resolver(["93.184.216.34", "127.0.0.1"])

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(reply(200)) as receiver:
            url = f"https://{HOST}:{receiver.port}/"
            return await deliver(url, BODY, {}, WebhookPolicy(resolver=resolver)), receiver

    result, receiver = run(scenario())
    assert (result.ok, result.error, result.retryable) == (False, "blocked_address", False)
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://127.0.0.1:{port}/", "scheme_not_allowed"),  # not allow-listed: http refused
        ("https://127.0.0.1:{port}/", "blocked_address"),
        ("https://[::ffff:127.0.0.1]:{port}/", "blocked_address"),
        ("https://localhost:{port}/", "blocked_host"),
    ],
)
def test_refused_urls_are_never_contacted(url: str, error: str) -> None:
    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(reply(200)) as receiver:
            return await deliver(url.format(port=receiver.port), BODY, {}, WebhookPolicy()), receiver

    result, receiver = run(scenario())
    assert (result.ok, result.status, result.error, result.retryable) == (False, None, error, False)
    assert receiver.requests == []


def test_an_unresolvable_host_is_retryable() -> None:
    def fails(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    result = run(deliver(f"https://{HOST}/", BODY, {}, WebhookPolicy(resolver=fails)))
    assert (result.ok, result.error, result.retryable) == (False, "unresolvable", True)


# TLS: SNI and the certificate are checked against the URL's hostname, not the pinned address


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_scenario(
    ca: trustme.CA, cert_names: Sequence[str], *, trust: bool = True
) -> tuple[DeliveryResult, Receiver, list[str | None]]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*cert_names).configure_cert(server_context)
    server_names: list[str | None] = []

    def record_sni(connection: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        server_names.append(name)

    server_context.sni_callback = record_sni
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    policy = WebhookPolicy(allow_hosts=frozenset({HOST}), resolver=Resolver(["127.0.0.1"]))

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(reply(200), ssl_context=server_context) as receiver:
            url = f"https://{HOST}:{receiver.port}/secure"
            return await deliver(url, BODY, {}, policy, ssl_context=client_context if trust else None), receiver

    return *run(scenario()), server_names


def test_tls_uses_the_hostname_for_sni_and_certificate(ca: trustme.CA) -> None:
    result, receiver, server_names = tls_scenario(ca, [HOST])
    assert result.ok, result
    assert server_names == [HOST]
    assert receiver.requests[0].headers["host"] == f"{HOST}:{receiver.port}"


@pytest.mark.parametrize(
    "cert_names",
    [
        ["other.example.test"],
        ["127.0.0.1"],  # valid for the address connected to, but that is not the name the customer gave
    ],
)
def test_a_certificate_for_another_name_fails(ca: trustme.CA, cert_names: list[str]) -> None:
    result, receiver, server_names = tls_scenario(ca, cert_names)
    assert (result.ok, result.status, result.error, result.retryable) == (False, None, "tls_error", True)
    assert f"Hostname mismatch, certificate is not valid for '{HOST}'" in result.detail
    assert server_names == [HOST]
    assert receiver.requests == []


def test_the_default_trust_refuses_an_unknown_ca(ca: trustme.CA) -> None:
    result, receiver, _ = tls_scenario(ca, [HOST], trust=False)
    assert (result.ok, result.error) == (False, "tls_error")
    assert "unable to get local issuer certificate" in result.detail
    assert receiver.requests == []


# Redirects and verdicts


def test_redirects_are_not_followed() -> None:
    async def scenario() -> tuple[DeliveryResult, Receiver, Receiver]:
        async with Receiver(reply(200)) as elsewhere:
            location = f"http://127.0.0.1:{elsewhere.port}/internal"
            async with Receiver(reply(302, headers=[("Location", location)])) as receiver:
                return await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, {}, LOCAL), receiver, elsewhere

    result, receiver, elsewhere = run(scenario())
    assert (result.ok, result.status, result.error, result.retryable) == (False, 302, "redirect_refused", False)
    assert "/internal" in result.detail
    assert len(receiver.requests) == 1
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("status", "ok", "error", "retryable"),
    [
        (200, True, None, False),
        (202, True, None, False),
        (204, True, None, False),
        (301, False, "redirect_refused", False),
        (307, False, "redirect_refused", False),
        (400, False, "http_4xx", False),
        (401, False, "http_4xx", False),
        (404, False, "http_4xx", False),
        (410, False, "http_4xx", False),
        (408, False, "http_4xx", True),
        (425, False, "http_4xx", True),
        (429, False, "http_4xx", True),
        (500, False, "http_5xx", True),
        (502, False, "http_5xx", True),
        (503, False, "http_5xx", True),
    ],
)
def test_status_verdicts(status: int, ok: bool, error: str | None, retryable: bool) -> None:
    async def scenario() -> DeliveryResult:
        async with Receiver(reply(status)) as receiver:
            return await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, {}, LOCAL)

    result = run(scenario())
    assert (result.ok, result.status, result.error, result.retryable) == (ok, status, error, retryable)


def test_connection_refused_is_retryable() -> None:
    result = run(deliver(f"http://127.0.0.1:{free_port()}/", BODY, {}, LOCAL))
    assert (result.ok, result.status, result.error, result.retryable) == (False, None, "connection_error", True)


# Bounded time and size


def test_a_receiver_that_never_answers_times_out() -> None:
    policy = WebhookPolicy(allow_hosts=frozenset({"127.0.0.1"}), connect_timeout_s=1.0, read_timeout_s=0.3)

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(never_answer) as receiver:
            return await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, {}, policy), receiver

    result, receiver = run(scenario())
    assert (result.ok, result.error, result.retryable) == (False, "read_timeout", True)
    assert len(receiver.requests) == 1  # the request did arrive
    assert 0.25 < result.elapsed_s < 2.0  # generous: a loaded CI machine


def test_a_dripping_receiver_is_cut_off_by_the_overall_deadline() -> None:
    policy = WebhookPolicy(allow_hosts=frozenset({"127.0.0.1"}), connect_timeout_s=0.2, read_timeout_s=0.4)

    async def scenario() -> DeliveryResult:
        async with Receiver(drip) as receiver:
            return await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, {}, policy)

    result = run(scenario())
    assert (result.ok, result.error, result.retryable) == (False, "read_timeout", True)
    assert 0.55 < result.elapsed_s < 2.0  # connect + read = 0.6 s, whereas the drip lasts 17 s


def test_a_stalled_tls_handshake_is_a_connect_timeout() -> None:
    """A server that accepts TCP and never speaks TLS: the handshake is bounded by the connect timeout."""
    policy = WebhookPolicy(allow_hosts=frozenset({"127.0.0.1"}), connect_timeout_s=0.3, read_timeout_s=5.0)

    async def scenario() -> DeliveryResult:
        stop = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await stop.wait()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            return await deliver(f"https://127.0.0.1:{port}/", BODY, {}, policy)
        finally:
            stop.set()
            server.close()
            await server.wait_closed()

    result = run(scenario())
    assert (result.ok, result.error, result.retryable) == (False, "connect_timeout", True)
    assert 0.25 < result.elapsed_s < 2.0


def test_a_large_response_is_read_only_up_to_the_limit() -> None:
    """The status decides: a 200 with an endless body is delivered, its body read only up to the limit."""
    policy = WebhookPolicy(allow_hosts=frozenset({"127.0.0.1"}), max_response_bytes=1000)

    async def scenario() -> DeliveryResult:
        async with Receiver(endless_body) as receiver:
            return await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, {}, policy)

    result = run(scenario())
    assert (result.ok, result.status, result.error, result.truncated) == (True, 200, None, True)
    assert result.response_body == b"x" * 1000
    assert result.elapsed_s < 2.0


def test_a_body_at_the_limit_is_whole() -> None:
    policy = WebhookPolicy(allow_hosts=frozenset({"127.0.0.1"}), max_response_bytes=5)

    async def scenario() -> DeliveryResult:
        async with Receiver(reply(500, b"oops!")) as receiver:
            return await deliver(f"http://127.0.0.1:{receiver.port}/", BODY, {}, policy)

    result = run(scenario())
    assert (result.status, result.response_body, result.truncated) == (500, b"oops!", False)


# Backoff


def test_backoff_is_full_jitter_below_an_exponential_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(16):
        ceiling = min(3600.0, 2.0**attempt)
        waits = [backoff_s(attempt, rng=rng) for _ in range(50)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        assert min(waits) < ceiling / 4 and max(waits) > ceiling * 3 / 4  # spread over the whole range


def test_backoff_base_and_cap() -> None:
    rng = random.Random(5)
    assert all(backoff_s(3, base_s=0.5, rng=rng) <= 4.0 for _ in range(50))
    assert all(backoff_s(10, base_s=1.0, cap_s=60.0, rng=rng) <= 60.0 for _ in range(50))
    assert 0.0 <= backoff_s(100_000) <= 3600.0  # no overflow for absurd attempt numbers
    with pytest.raises(ValueError):
        backoff_s(-1)
