"""The FastAPI app factory. Everything lives on ``app.state`` (built in the lifespan), nothing in globals."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

from fastapi import Depends, FastAPI

from chorus import __version__
from chorus.audit import AuditWriter
from chorus.config import Settings
from chorus.consent.service import ConsentPolicy, ConsentService
from chorus.engine.builder import build_engine
from chorus.engine.client import AsyncEngine
from chorus.finetune.dataset_service import DatasetLimits, DatasetService
from chorus.finetune.jobs import FineTuneService, training_kind
from chorus.jobs.dispatcher import DispatchConfig, WebhookDispatcher
from chorus.jobs.runner import JobRunner, RunnerConfig
from chorus.models.base import Backend
from chorus.server.auth import authenticate, check_can_start, keys_required
from chorus.server.background import canary_loop, install_gauges, malloc_trim_loop
from chorus.server.deps import ServerState
from chorus.server.errors import ERROR_RESPONSES, install_error_handlers
from chorus.server.fleet import Fleet
from chorus.server.malloc import glibc
from chorus.server.metrics_port import MetricsListener
from chorus.server.observability import OpsMiddleware, ServerMetrics, build_info
from chorus.server.routes import consents as consent_routes
from chorus.server.routes import datasets as dataset_routes
from chorus.server.routes import fine_tunes as fine_tune_routes
from chorus.server.routes import jobs as job_routes
from chorus.server.routes import openai, ops, playground, realtime, verify, voices, vtts
from chorus.server.uploads import UploadLimit
from chorus.speech import SpeechService, speech_limits
from chorus.store.audit import AuditLog
from chorus.store.blobs import BlobStore
from chorus.store.consents import ConsentStore
from chorus.store.datasets import DatasetStore
from chorus.store.fine_tunes import FineTuneStore
from chorus.store.jobs import JobStore
from chorus.store.keys import KeyStore
from chorus.store.replicas import ReplicaStore
from chorus.store.secrets import shared_secret
from chorus.store.settings import open_store
from chorus.store.sql import SqlStore
from chorus.store.voices import VoiceStore
from chorus.store.webhooks import WebhookStore
from chorus.voices.catalog import VoiceCatalog
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.preprocess import ReferenceLimits
from chorus.voices.service import VoiceService
from chorus.watermark.marking import HOLD_BACK_S, SECRET_NAME, Marking, configured_key
from chorus.webhooks.ssrf import WebhookPolicy

log = logging.getLogger(__name__)
# A voice still "pending" this long after it was started belongs to a registration that crashed (a live one on
# another replica finishes in seconds): its row and blobs are removed at start-up.
SWEEP_PENDING_AFTER_S = 3600.0
# Expired challenges can only be refused; kept a day (for a client's late retry to read "expired"), then removed.
CHALLENGES_KEPT = timedelta(days=1)


def watermark_key(settings: Settings, sql: SqlStore) -> bytes:
    return configured_key(settings.safety.watermark_key) or shared_secret(sql, SECRET_NAME)


def consent_policy(settings: Settings) -> ConsentPolicy:
    safety = settings.safety
    return ConsentPolicy(
        require_consent=safety.require_consent,
        challenge_ttl_s=safety.challenge_ttl_s,
        speaker_threshold=safety.consent_speaker_threshold,
    )


def webhook_policy(settings: Settings) -> WebhookPolicy:
    hooks = settings.webhooks
    return WebhookPolicy(
        allow_hosts=frozenset(h.strip().lower() for h in hooks.allow_hosts),
        connect_timeout_s=hooks.connect_timeout_s,
        read_timeout_s=hooks.read_timeout_s,
    )


def dispatch_config(settings: Settings) -> DispatchConfig:
    hooks = settings.webhooks
    return DispatchConfig(
        max_attempts=hooks.max_attempts, backoff_base_s=hooks.backoff_base_s, backoff_cap_s=hooks.backoff_cap_s
    )


def runner_config(settings: Settings) -> RunnerConfig:
    jobs = settings.jobs
    return RunnerConfig(concurrency=jobs.concurrency, lease_s=jobs.lease_s, max_attempts=jobs.max_attempts)


def _draining(app: FastAPI) -> bool:
    state: ServerState | None = getattr(app.state, "chorus", None)
    return state is not None and state.is_draining


def create_app(
    settings: Settings, *, backend: Backend | None = None, store: tuple[SqlStore, BlobStore] | None = None
) -> FastAPI:
    """Build the app; the model loads and the database migrates when the app starts (lifespan), not at import."""
    metrics = ServerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sql, blobs = (
            store if store is not None else await asyncio.to_thread(open_store, settings.store, settings.data_dir)
        )
        voice_store = VoiceStore(sql, blobs)
        swept = await asyncio.to_thread(voice_store.sweep_pending, SWEEP_PENDING_AFTER_S)
        if swept:
            log.warning("removed %d voice(s) left half-registered by an earlier crash", len(swept))
        consent_store = ConsentStore(sql, blobs)
        released = await asyncio.to_thread(consent_store.release_orphans)
        if released:
            log.warning("released %d consent(s) claimed by registrations that did not finish", released)
        await asyncio.to_thread(consent_store.purge_challenges, CHALLENGES_KEPT)
        dataset_store = DatasetStore(sql, blobs)
        await asyncio.to_thread(dataset_store.sweep_pending, SWEEP_PENDING_AFTER_S)
        keys = KeyStore(sql)
        audit = AuditWriter(AuditLog(sql), retention_days=settings.safety.audit_retention_days)
        await asyncio.to_thread(check_can_start, settings, keys)
        engine = await asyncio.to_thread(partial(build_engine, settings, backend, output_hold_s=HOLD_BACK_S))
        engine.metrics.events = metrics
        build_info(metrics, engine.backend.name, settings.model.name)
        client = AsyncEngine(engine)
        client.start()
        catalog = VoiceCatalog(engine.backend.voices())
        encoder = SpeakerEncoder()
        marking = Marking(await asyncio.to_thread(watermark_key, settings, sql))
        consents = ConsentService(consent_store, encoder=encoder, policy=consent_policy(settings), marks=marking)
        voice_service = VoiceService(
            voice_store, catalog, engine.backend, encoder=encoder, limits=limits, consents=consents
        )
        state = ServerState(
            settings=settings,
            engine=client,
            speech=SpeechService(client, voice_service, speech_limits(settings), marking=marking, audit=audit),
            voices=catalog,
            model_id=settings.model.name,
            started_at=time.time(),
            voice_service=voice_service,
            consents=consents,
            marking=marking,
            keys=keys,
            audit=audit,
            keys_required=keys_required(settings),
            jobs=JobStore(sql, blobs),
            webhook_store=WebhookStore(sql),
            webhook_policy=webhook_policy(settings),
            metrics=metrics,
            datasets=DatasetService(
                dataset_store, consents, encoder=encoder, limits=DatasetLimits.from_config(settings.finetune)
            ),
        )
        state.fine_tunes = FineTuneService(
            FineTuneStore(sql), state.datasets, consents, voice_store, blobs, backend=training_kind(engine.backend)
        )
        state.dispatcher = WebhookDispatcher(
            state.webhook_store,
            state.webhook_policy,
            dispatch_config(settings),
            on_attempt=lambda outcome: metrics.webhook_attempts.labels(outcome).inc(),
        )
        state.dispatcher.start()

        def item_done(outcome: str) -> None:
            metrics.job_items.labels(outcome).inc()
            state.wake_webhooks()

        if settings.jobs.enabled:
            state.runner = JobRunner(
                state.jobs,
                state.speech,
                client,
                runner_config(settings),
                out_rate=settings.server.output_sample_rate,
                on_item=item_done,
            )
            state.runner.start()
        install_gauges(state, metrics)
        background: list[asyncio.Task[None]] = []
        if settings.server.canary_interval_s > 0:
            canary = SpeechService(client, voice_service, speech_limits(settings), marking=None, audit=None)
            loop = canary_loop(state, metrics, canary, settings.server.canary_interval_s)
            background.append(asyncio.create_task(loop, name="chorus-canary"))
        if settings.server.malloc_trim_interval_s > 0 and glibc() is not None:
            trimming = malloc_trim_loop(metrics, settings.server.malloc_trim_interval_s)
            background.append(asyncio.create_task(trimming, name="chorus-malloc-trim"))
        fleet_task: asyncio.Task[None] | None = None
        if settings.server.fleet_heartbeat_s > 0:
            beat_s = settings.server.fleet_heartbeat_s
            state.fleet = Fleet(ReplicaStore(sql), client, beat_s=beat_s, is_draining=lambda: state.is_draining)
            fleet_task = asyncio.create_task(state.fleet.run(), name="chorus-fleet")
        listener: MetricsListener | None = None
        if settings.server.metrics_port is not None:
            listener = MetricsListener(metrics, settings.server.host, settings.server.metrics_port)
            listener.start()
        app.state.chorus = state
        log.info(
            "chorus ready: backend %s, %d slots, %d workers, mode %s",
            engine.backend.name,
            engine.config.max_slots,
            engine.backend.num_workers,
            engine.config.mode,
        )
        try:
            yield
        finally:
            state.is_draining = True
            for running in background:
                running.cancel()
            await state.stop_jobs()
            await client.shutdown(drain_timeout_s=settings.server.drain_timeout_s)
            await state.dispatcher.stop()
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            if fleet_task is not None:  # beat through the drain (peers see it), then leave the fleet
                fleet_task.cancel()
                await asyncio.gather(fleet_task, return_exceptions=True)
            await asyncio.to_thread(
                audit.close
            )  # the rows of the last responses are written before the database closes
            sql.close()

    limits = ReferenceLimits()
    app = FastAPI(
        title="chorus",
        version=__version__,
        description="Continuous-batching text-to-speech server (OpenAI- and vTTS-compatible).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(OpsMiddleware, metrics=metrics, draining=lambda: _draining(app))
    authenticated = [Depends(authenticate)]
    for router in (openai.router, vtts.router, voices.router, consent_routes.router, verify.router, job_routes.router):
        app.include_router(router, dependencies=authenticated, responses=ERROR_RESPONSES)
    app.include_router(dataset_routes.router, dependencies=authenticated, responses=ERROR_RESPONSES)
    app.include_router(fine_tune_routes.router, dependencies=authenticated, responses=ERROR_RESPONSES)
    app.include_router(ops.router)
    app.include_router(realtime.router)  # authenticates itself: a header or, for browsers, ?api_key=
    app.include_router(ops.authenticated_router, dependencies=authenticated, responses=ERROR_RESPONSES)
    app.include_router(playground.router)  # the page is public; its JSON about a tenant authenticates itself
    # Uploads larger than a reference clip may be are refused before their body is read whole.
    app.add_middleware(
        UploadLimit,
        max_bytes=limits.max_bytes,
        paths=voices.UPLOAD_PATHS | consent_routes.UPLOAD_PATHS | verify.UPLOAD_PATHS,
    )
    app.add_middleware(  # datasets: archives of many clips, their own limit
        UploadLimit, max_bytes=settings.finetune.max_dataset_bytes, paths=dataset_routes.UPLOAD_PATHS, param="archive"
    )
    return app
