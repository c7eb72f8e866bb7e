"""Settings → a ready engine (backend loaded, loop not started)."""

from __future__ import annotations

from chorus.config import Settings
from chorus.engine.config import EngineConfig
from chorus.engine.engine import Engine
from chorus.models.base import Backend
from chorus.models.registry import build_backend


def engine_config(settings: Settings, backend: Backend, *, output_hold_s: float = 0.0) -> EngineConfig:
    """``output_hold_s``: audio the layer above the engine holds back before it leaves (the watermark's look-ahead);
    a stream's deadlines come that much earlier, so its client still never runs dry."""
    worker = settings.worker
    return EngineConfig(
        max_slots=worker.max_slots or backend.default_max_slots,
        queue_limit=settings.server.queue_limit,
        mode=worker.mode,
        step_budget_s=worker.step_budget_ms / 1000.0,
        max_frames=worker.max_frames,
        first_audio_target_s=worker.first_audio_target_ms / 1000.0,
        delivery_margin_s=worker.delivery_margin_ms / 1000.0 + output_hold_s,
        lead_s=worker.lead_ms / 1000.0,
        playing_nice=worker.playing_nice,
        max_load=worker.max_load or None,
        max_queue_wait_s=settings.server.max_queue_wait_s,
        stall_timeout_s=worker.stall_timeout_s or None,
    )


def build_engine(settings: Settings, backend: Backend | None = None, *, output_hold_s: float = 0.0) -> Engine:
    backend = backend or build_backend(settings)
    return Engine(backend, engine_config(settings, backend, output_hold_s=output_hold_s))
