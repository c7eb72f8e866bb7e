"""What an on-call engineer reads: Prometheus metrics (``/metrics``), one JSON log line per event with the
request id on every line of a request, and the door that turns new work away while the server drains.

Metrics live in a registry of the app's own (not prometheus-client's global one), so several apps in one process
(tests) do not collide. Live state (queue depth, slots, jobs by state, load state) is read when Prometheus
scrapes; events (steps, first audio, chunk gaps, requests) are counted as they happen. The engine reports its
events through ``chorus.engine.metrics.EngineEvents``, on its own thread: each call only bumps a metric.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chorus import __version__
from chorus.server.errors import error_body

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("chorus_request_id", default=None)
access_log = logging.getLogger("chorus.access")

# Seconds. First audio: tens of ms to the queue's limit; steps: ms to a stalled second; gaps: up to a stall.
TTFA_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
GAP_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0)


class ServerMetrics:
    """Every metric chorus exports, in one registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.build_info = Gauge(
            "chorus_build_info",
            "chorus version, backend and model (value 1)",
            ["version", "backend", "model"],
            registry=registry,
        )
        self.queue_depth = Gauge("chorus_queue_depth", "requests waiting for a slot", registry=registry)
        self.running_slots = Gauge("chorus_running_slots", "requests holding a slot", registry=registry)
        self.max_slots = Gauge("chorus_max_slots", "slots the engine has", registry=registry)
        self.model_loaded = Gauge(
            "chorus_model_loaded", "1 while the model is loaded and its engine runs", ["backend"], registry=registry
        )
        self.voices = Gauge("chorus_voices", "voices by kind (built-in; cloned, stored)", ["kind"], registry=registry)
        self.draining = Gauge("chorus_draining", "1 while the server drains (SIGTERM)", registry=registry)
        self.ready = Gauge("chorus_ready", "1 while /ready answers 200", registry=registry)
        self.in_flight = Gauge("chorus_http_in_flight", "HTTP requests being answered", registry=registry)
        self.agent_sessions = Gauge("chorus_agent_sessions", "voice-agent WebSocket sessions open", registry=registry)
        self.step_seconds = Histogram(
            "chorus_step_seconds", "wall time of one backend step", buckets=STEP_BUCKETS, registry=registry
        )
        self.step_slots = Histogram(
            "chorus_step_slots", "slots advanced by one step", buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry
        )
        self.ttfa = Histogram(
            "chorus_ttfa_seconds",
            "time to first audio, in the engine (arrival to first audio)",
            buckets=TTFA_BUCKETS,
            registry=registry,
        )
        self.chunk_gap = Histogram(
            "chorus_chunk_gap_seconds",
            "time between a playing stream's consecutive audio chunks",
            buckets=GAP_BUCKETS,
            registry=registry,
        )
        self.underruns = Counter(
            "chorus_underruns_total",
            "chunks that left the engine after their client (playing in real time) would have run dry",
            registry=registry,
        )
        self.rtf = Histogram(
            "chorus_rtf",
            "real-time factor of finished requests (wall time / audio time)",
            buckets=RTF_BUCKETS,
            registry=registry,
        )
        self.audio_seconds = Counter("chorus_audio_seconds_total", "audio produced", registry=registry)
        self.engine_requests = Counter(
            "chorus_engine_requests_total", "requests the engine finished, by outcome", ["outcome"], registry=registry
        )
        self.requests = Counter(
            "chorus_http_requests_total",
            "HTTP requests by route, status and tenant",
            ["route", "status", "tenant"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "chorus_http_request_seconds",
            "HTTP request duration (whole body streamed), by route",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.throttled = Counter(
            "chorus_throttled_total", "requests refused with 429, by route", ["route"], registry=registry
        )
        self.jobs = Gauge("chorus_jobs", "batch jobs by state", ["state"], registry=registry)
        self.job_items = Counter(
            "chorus_job_items_total", "job items this server ran, by outcome", ["outcome"], registry=registry
        )
        self.webhook_events = Gauge(
            "chorus_webhook_events", "webhook events by state (dead: dead letters)", ["state"], registry=registry
        )
        self.webhook_attempts = Counter(
            "chorus_webhook_attempts_total", "webhook delivery attempts by outcome", ["outcome"], registry=registry
        )
        self.last_good_synthesis = Gauge(
            "chorus_last_good_synthesis_timestamp_seconds",
            "Unix time of the last synthesis that finished well (live or the idle canary)",
            registry=registry,
        )
        self.canary_failures = Counter(
            "chorus_canary_failures_total", "idle canary syntheses that failed", registry=registry
        )
        self.malloc_trims = Counter(
            "chorus_malloc_trims_total",
            "malloc_trim calls (server.malloc_trim_interval_s; glibc), by whether they released memory",
            ["released"],
            registry=registry,
        )
        self.admission_cores = Gauge(
            "chorus_admission_cores",
            "CPU admission control's reading, in cores: capacity (what it plans live streams on), other_processes"
            " (this machine's other processes' use), stolen (a hypervisor's steal)",
            ["kind"],
            registry=registry,
        )
        self._collectors: list[Callable[[], None]] = []
        self.active = 0  # HTTP requests being answered (a drain waits for them)
        self.last_good_at = 0.0  # Unix time of the last synthesis that finished well

    def on_scrape(self, collect: Callable[[], None]) -> None:
        """Run ``collect`` (it sets gauges from live state) before every exposition."""
        self._collectors.append(collect)

    def exposition(self) -> tuple[bytes, str]:
        for collect in self._collectors:
            try:
                collect()
            except Exception:  # a database that is down must not take /metrics with it
                logging.getLogger(__name__).exception("metrics: a collector failed")
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- chorus.engine.metrics.EngineEvents ------------------------------------------------------

    def step(self, duration_s: float, num_slots: int, audio_s: float) -> None:
        self.step_seconds.observe(duration_s)
        self.step_slots.observe(num_slots)
        self.audio_seconds.inc(audio_s)

    def first_audio(self, seconds: float) -> None:
        self.ttfa.observe(seconds)

    def chunk(self, gap_s: float, late_s: float) -> None:
        self.chunk_gap.observe(gap_s)
        if late_s > 0:
            self.underruns.inc()

    def finished(self, status: str, service_s: float | None, audio_s: float) -> None:
        outcome = status.removeprefix("finished_")
        self.engine_requests.labels(outcome).inc()
        if outcome == "stopped":
            self.last_good_at = time.time()
            self.last_good_synthesis.set(self.last_good_at)
            if service_s is not None and audio_s > 0:
                self.rtf.observe(service_s / audio_s)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record logged while it is being answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def configure_logging(level: str, fmt: str) -> None:
    """Root logging for ``chorus serve``: JSON lines (``fmt`` "json") or text; uvicorn's own access log is off
    (chorus writes one line per request itself, with its id, route, status, tenant and duration)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _tenant_of(scope: Scope) -> str:
    state = scope.get("state") or {}
    principal = state.get("principal") if isinstance(state, dict) else None
    return str(getattr(principal, "tenant_id", "-"))


class OpsMiddleware:
    """Pure ASGI (a streamed body is counted until its last byte): names every request (``X-Request-Id``, else a
    new id, echoed back), turns new /v1 work away with 503 + Retry-After while the server drains, counts what is
    in flight, records metrics and writes one access line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        draining: Callable[[], bool],
        retry_after_s: float = 5.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.draining = draining
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 and all(c.isalnum() or c in "-_.:" for c in given) else None
        request_id = request_id or f"req_{uuid.uuid4().hex[:20]}"
        token = request_id_var.set(request_id)
        path = str(scope.get("path", ""))
        started = time.perf_counter()
        status = 500
        self.metrics.active += 1
        self.metrics.in_flight.inc()

        async def send_named(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in raw):
                    raw.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": raw}
            await send(message)

        try:
            if self.draining() and path.startswith("/v1/"):
                await _draining_response(send_named, self.retry_after_s)
            else:
                await self.app(scope, receive, send_named)
        finally:
            self.metrics.active -= 1
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route, tenant = _route_of(scope), _tenant_of(scope)
            self.metrics.requests.labels(route, str(status), tenant).inc()
            self.metrics.request_seconds.labels(route).observe(elapsed)
            if status == 429:
                self.metrics.throttled.labels(route).inc()
            if path not in ("/metrics", "/health", "/ready"):
                access_log.info(
                    "%s %s %d",
                    scope.get("method"),
                    route,
                    status,
                    extra={"status": status, "route": route, "tenant": tenant, "duration_s": round(elapsed, 4)},
                )
            request_id_var.reset(token)


async def _draining_response(send: Callable[[Message], Any], retry_after_s: float) -> None:
    import json

    body = json.dumps(
        error_body("server_error", "the server is shutting down; retry on another replica", None, "draining")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(max(1, round(retry_after_s))).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_info(metrics: ServerMetrics, backend: str, model: str) -> None:
    metrics.build_info.labels(__version__, backend, model).set(1)
