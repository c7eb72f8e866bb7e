"""Objects built in the lifespan and kept on ``app.state``, handed to routes as typed dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from chorus.audit import AuditWriter
from chorus.config import Settings
from chorus.consent.service import ConsentService
from chorus.engine.client import AsyncEngine
from chorus.errors import PermissionDeniedError
from chorus.finetune.dataset_service import DatasetService
from chorus.finetune.jobs import FineTuneService
from chorus.jobs.dispatcher import WebhookDispatcher
from chorus.jobs.runner import JobRunner
from chorus.server.auth import Principal
from chorus.server.fleet import Fleet
from chorus.server.observability import ServerMetrics
from chorus.speech import SpeechService
from chorus.store.jobs import JobStore
from chorus.store.keys import KeyStore
from chorus.store.webhooks import WebhookStore
from chorus.voices.catalog import VoiceCatalog
from chorus.voices.service import VoiceService
from chorus.watermark.marking import Marking
from chorus.webhooks.ssrf import WebhookPolicy

OPENAI_MODEL_ALIASES = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})


@dataclass
class ServerState:
    settings: Settings
    engine: AsyncEngine
    speech: SpeechService
    voices: VoiceCatalog
    model_id: str
    started_at: float
    voice_service: VoiceService
    consents: ConsentService
    marking: Marking
    keys: KeyStore
    audit: AuditWriter
    keys_required: bool
    jobs: JobStore
    webhook_store: WebhookStore
    webhook_policy: WebhookPolicy
    metrics: ServerMetrics
    datasets: DatasetService
    fine_tunes: FineTuneService | None = None
    runner: JobRunner | None = None
    dispatcher: WebhookDispatcher | None = None
    fleet: Fleet | None = None
    is_draining: bool = False
    agent_sessions: int = 0  # voice-agent WebSocket sessions open

    async def stop_jobs(self) -> None:
        """Stop running job items and give them back, so another replica takes them at once (idempotent)."""
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.stop()

    def wake_webhooks(self) -> None:
        """A job may just have ended: its event goes out now, not at the dispatcher's next poll."""
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def accepts_model(self, name: str) -> bool:
        key = name.strip().lower()
        return key in {self.model_id.lower(), self.engine.backend.name.lower(), "chorus"} | OPENAI_MODEL_ALIASES


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chorus
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


def principal_of(request: Request) -> Principal:
    """Who is calling, as ``chorus.server.auth.authenticate`` (a dependency of every /v1 route) found."""
    principal: Principal = request.state.principal
    return principal


def require_admin(request: Request, what: str) -> None:
    """403 unless the caller holds an admin key (keyless callers on a loopback bind are admins)."""
    if principal_of(request).role != "admin":
        raise PermissionDeniedError(f"{what} needs an admin key")


def tenant_of(request: Request) -> str:
    return principal_of(request).tenant_id
