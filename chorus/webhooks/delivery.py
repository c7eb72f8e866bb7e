"""One attempt at POSTing one webhook, safely: to the address that was checked, within bounded time and memory.

``deliver`` resolves the URL once (``ssrf.resolve`` refuses internal addresses) and then connects to that pinned
address, never looking the name up again, so a DNS answer that changes in between (DNS rebinding) cannot send
the request anywhere else. The request still speaks to the original host: httpx is given the URL with the
pinned IP in place of the hostname, an explicit ``Host`` header, and the ``sni_hostname`` request extension.
httpcore passes ``sni_hostname`` as ``server_hostname`` to ``SSLContext.wrap_bio``, which both sends it as SNI
and, because the context has ``check_hostname`` on, verifies the certificate against it rather than against
the IP (tests/webhooks/test_delivery.py proves both: a certificate for the hostname served on 127.0.0.1 passes;
one for another name, or for 127.0.0.1 itself, fails).

Everything that could make chorus a tool against a receiver or against itself is bounded: no redirects (a 3xx
could point anywhere, including inside the network), no proxies or ``.netrc`` from the environment (a proxy
would resolve the name itself), the whole exchange within ``connect_timeout_s + read_timeout_s`` (a receiver
dripping one byte at a time defeats a per-read timeout), and at most ``max_response_bytes`` of the response.

The status line is the verdict. A response body larger than ``max_response_bytes`` is not a failure: reading
simply stops there and ``truncated`` says so (and likewise if the body stalls past the deadline), because the
receiver has already accepted the message, and failing would only make the job system deliver it again.

Retrying is the caller's business: ``retryable`` says whether the same attempt later could succeed, and
``backoff_s`` says how long to wait.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import certifi
import httpx

from chorus.webhooks.ssrf import Target, WebhookPolicy, WebhookURLError, resolve

USER_AGENT = "chorus-webhooks/1"
# Request Timeout, Too Early, Too Many Requests: the receiver asks to be tried again later.
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True)
class DeliveryResult:
    """How one attempt went. ``error`` is a short stable code (None when ``ok``) and ``detail`` says more, for
    people; ``response_body`` holds at most ``max_response_bytes`` of what the receiver answered. Both are for
    the customer's delivery log: enough to fix their endpoint without asking us."""

    ok: bool
    status: int | None
    error: str | None
    retryable: bool
    elapsed_s: float
    response_body: bytes = b""
    truncated: bool = False
    detail: str = ""


async def deliver(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: WebhookPolicy,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> DeliveryResult:
    """POST ``body`` to ``url`` once, with ``headers`` (the signature's, a content type) added to chorus's own.

    Never raises for anything the network or the receiver does; ``ssl_context`` replaces the default trust
    (certifi's CA bundle), which only tests need.
    """
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + policy.connect_timeout_s + policy.read_timeout_s

    def failed(error: str, detail: str, *, retryable: bool) -> DeliveryResult:
        return DeliveryResult(False, None, error, retryable, time.monotonic() - started, detail=detail)

    try:
        target = await resolve(url, policy)  # bounded by connect_timeout_s
    except WebhookURLError as exc:
        # A DNS failure may be passing; a refused URL or address will be refused again.
        return failed(exc.code, str(exc), retryable=exc.code == "unresolvable")

    progress = _Progress()
    async with _client(policy, ssl_context) as client:
        request = client.build_request(
            "POST",
            target.pinned_url,
            content=body,
            headers=_request_headers(target, headers),
            extensions={"sni_hostname": target.host, "trace": progress.trace},
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except TimeoutError:
            code = "read_timeout" if progress.sent else "connect_timeout"
            total_s = policy.connect_timeout_s + policy.read_timeout_s
            return failed(code, f"no complete response head within {total_s:g} s", retryable=True)
        except httpx.HTTPError as exc:
            return failed(_transport_error(exc), str(exc) or type(exc).__name__, retryable=True)
        try:
            excerpt, truncated = await _read_capped(response, policy.max_response_bytes, deadline)
        finally:
            await response.aclose()

    status = response.status_code
    detail = f"HTTP {status} {response.reason_phrase}".rstrip()
    if 200 <= status < 300:
        error, retryable = None, False
    elif 300 <= status < 400:
        error, retryable = "redirect_refused", False
        detail += f" to {response.headers.get('location', 'nowhere')!r}: redirects are not followed"
    elif 400 <= status < 500:
        error, retryable = "http_4xx", status in _RETRYABLE_4XX
    elif 500 <= status < 600:
        error, retryable = "http_5xx", True
    else:
        error, retryable = "bad_status", False
    elapsed_s = time.monotonic() - started
    return DeliveryResult(error is None, status, error, retryable, elapsed_s, excerpt, truncated, detail)


def backoff_s(attempt: int, *, base_s: float = 1.0, cap_s: float = 3600.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry): uniform in
    [0, min(cap_s, base_s * 2**attempt)] ("full jitter"), so that the many deliveries that failed together
    when a receiver went down do not all come back at the same instant when it returns."""
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 1023))  # 2.0**1024 overflows; the cap applies long before
    return (rng.uniform if rng is not None else random.uniform)(0.0, ceiling)


class _Progress:
    """Whether the request had started going out: tells a connect timeout from a read timeout when the overall
    deadline (rather than one of httpx's own timeouts) ends the attempt. Fed by httpcore's trace extension."""

    def __init__(self) -> None:
        self.sent = False

    async def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event == "http11.send_request_headers.started":
            self.sent = True


def _client(policy: WebhookPolicy, ssl_context: ssl.SSLContext | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl_context or _default_ssl_context(),
        timeout=httpx.Timeout(
            connect=policy.connect_timeout_s,
            read=policy.read_timeout_s,
            write=policy.read_timeout_s,
            pool=policy.connect_timeout_s,
        ),
        follow_redirects=False,
        trust_env=False,  # no HTTP(S)_PROXY (it would resolve the name itself), no .netrc credentials
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    )


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """httpx's own default trust (certifi), built once: loading the CA bundle costs milliseconds each time."""
    return ssl.create_default_context(cafile=certifi.where())


def _request_headers(target: Target, given: Mapping[str, str]) -> httpx.Headers:
    headers = httpx.Headers(
        {"User-Agent": USER_AGENT, "Content-Type": "application/json", "Accept-Encoding": "identity"}
    )
    headers.update(given)
    headers["Host"] = target.host_header  # the URL holds the pinned IP; the receiver must see its own name
    return headers


async def _read_capped(response: httpx.Response, limit: int, deadline: float) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the (not decompressed) body, and whether reading stopped before its end: at the
    limit, at the deadline, or because the connection failed. The status already decided the outcome."""
    received = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) > limit:
                    return bytes(received[:limit]), True
    except (TimeoutError, httpx.HTTPError):
        return bytes(received[:limit]), True
    return bytes(received), False


def _transport_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect_timeout"  # includes the TLS handshake, which httpcore bounds by the connect timeout
    if isinstance(exc, httpx.TimeoutException):
        return "read_timeout"
    # httpx wraps httpcore's error, which wraps the ssl module's: look down the chain.
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return "tls_error"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return "connection_error"
