"""What a server does besides answering: live gauges for /metrics, the idle canary and malloc's trim.

The canary speaks one short line through the whole path (voice, engine, backend, encoder) when the server has
been idle for ``server.canary_interval_s``, so ``chorus_last_good_synthesis_timestamp_seconds`` tells an alert
"nothing has been synthesised well for N minutes" apart from "nobody asked" (live requests that finish well
update it too). It runs at the lowest priority, leaves no audit row (no one's speech) and is not watermarked
(its audio goes nowhere).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import get_args

from chorus.server.deps import ServerState
from chorus.server.malloc import trim
from chorus.server.observability import ServerMetrics
from chorus.speech import SpeechOrder, SpeechService
from chorus.store.tables import EventStatus, JobStatus

log = logging.getLogger(__name__)
CANARY_TEXT = "Canary check."
CANARY_PRIORITY = -100
STORE_GAUGES_EVERY_S = 5.0  # jobs and webhook events by state: database reads, at most this often


def install_gauges(state: ServerState, metrics: ServerMetrics) -> None:
    """Gauges read from live state at every scrape (the database's ones at most every few seconds)."""
    engine = state.engine
    last_store_read = -float("inf")

    def collect() -> None:
        nonlocal last_store_read
        alive = engine.is_alive()
        metrics.queue_depth.set(engine.num_waiting)
        metrics.running_slots.set(engine.num_running)
        metrics.max_slots.set(engine.engine.config.max_slots)
        metrics.model_loaded.labels(engine.backend.name).set(1 if alive else 0)
        metrics.voices.labels("builtin").set(len(state.voices.list()))
        metrics.draining.set(1 if state.is_draining else 0)
        metrics.ready.set(1 if alive and not state.is_draining and not engine.is_queue_full else 0)
        admission = engine.engine.admission
        if admission is not None:
            reading = admission.describe()
            for kind in ("capacity", "other_processes", "stolen"):
                metrics.admission_cores.labels(kind).set(reading[f"{kind}_cores"])
        now = time.monotonic()
        if now - last_store_read >= STORE_GAUGES_EVERY_S:
            last_store_read = now
            for status, count in {
                **dict.fromkeys(get_args(JobStatus), 0),
                **state.jobs.counts_by_status(),
            }.items():
                metrics.jobs.labels(status).set(count)
            for status, count in {
                **dict.fromkeys(get_args(EventStatus), 0),
                **state.webhook_store.counts_by_status(),
            }.items():
                metrics.webhook_events.labels(status).set(count)
            metrics.voices.labels("cloned").set(state.voice_service.store.count())

    metrics.on_scrape(collect)


async def canary_loop(state: ServerState, metrics: ServerMetrics, canary: SpeechService, interval_s: float) -> None:
    """Every ``interval_s`` of idleness, one short synthesis; a failure counts and is logged (never raised)."""
    voice = state.voices.default.voice_id
    while True:
        await asyncio.sleep(interval_s)
        engine = state.engine
        idle = engine.num_running == 0 and engine.num_waiting == 0
        if state.is_draining or not engine.is_alive() or not idle:
            continue
        if time.time() - metrics.last_good_at < interval_s:  # a live request did
            continue
        try:
            stream = await canary.open(SpeechOrder(CANARY_TEXT, voice, priority=CANARY_PRIORITY))
            audio_s = 0.0
            async for out in stream:
                audio_s = out.audio_seconds
            if audio_s <= 0:
                raise RuntimeError("the canary produced no audio")
        except Exception as e:
            metrics.canary_failures.inc()
            log.warning("canary synthesis failed: %s", e)


async def malloc_trim_loop(metrics: ServerMetrics, interval_s: float) -> None:
    """Every ``interval_s``, glibc's ``malloc_trim`` on a worker thread (it holds each arena's lock for a moment,
    never the event loop)."""
    while True:
        await asyncio.sleep(interval_s)
        released = await asyncio.to_thread(trim)
        metrics.malloc_trims.labels("true" if released else "false").inc()
