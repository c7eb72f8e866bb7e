"""Fine-tune jobs as tenants see them: what ``POST /v1/fine_tunes`` checks before queueing, and the job object.

Everything that can be refused is refused here, before a worker spends minutes or hours: the dataset must be the
tenant's and its consent still on record and unused by any voice, the name must be free, the settings in range.
The job records the backend it was asked of (``qwen3`` trains a LoRA adapter, ``piper`` fits the per-voice
converter on the whole dataset); a worker running another model refuses it with ``model_mismatch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chorus.consent.service import ConsentService
from chorus.errors import InvalidRequestError
from chorus.finetune.dataset_service import DatasetService, TrainingClip
from chorus.store.blobs import BlobStore
from chorus.store.fine_tunes import (
    FineTuneConflictError,
    FineTuneEvent,
    FineTuneNotFoundError,
    FineTuneRecord,
    FineTuneStore,
)
from chorus.store.voices import VoiceStore

Target = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_TARGETS: tuple[Target, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FineTuneRequest(BaseModel):
    """``POST /v1/fine_tunes``. The LoRA settings apply to Qwen3; Piper's converter has none but ``seed``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"dataset": "ds_…", "name": "my-voice", "steps": 500}]}
    )
    dataset: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=200, description="the new voice's name (unique in the tenant)")
    rank: int = Field(default=8, ge=1, le=128)
    alpha: float = Field(default=16.0, gt=0, le=4096)
    targets: list[Target] = Field(default_factory=lambda: list(ALL_TARGETS), min_length=1, max_length=7)
    steps: int = Field(default=500, ge=1, le=200_000)
    learning_rate: float = Field(default=1e-4, gt=0, le=0.01)
    batch_size: int = Field(default=2, ge=1, le=64)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    language: str = Field(default="auto", max_length=32, description="the language the voice will speak")


@dataclass
class TrainOutcome:
    """What a worker's training run ended with: a voice model (and its report) or a preemption at ``step``."""

    status: str  # "succeeded" | "preempted"
    step: int
    model: bytes | None = None
    report: dict[str, Any] | None = None
    reference: TrainingClip | None = None  # the clip the voice's prompt / one-clip baseline was made from


def loss_curve_key(tenant_id: str, fine_tune_id: str) -> str:
    return f"fine_tunes/{tenant_id}/{fine_tune_id}/loss.png"


def training_kind(backend: object) -> str:
    """What a fine-tune of this backend trains: a LoRA adapter (Qwen3) or the voice converter (Piper)."""
    return "qwen3" if type(backend).__name__ == "Qwen3Backend" else "piper"


class FineTuneService:
    def __init__(
        self,
        store: FineTuneStore,
        datasets: DatasetService,
        consents: ConsentService,
        voices: VoiceStore,
        blobs: BlobStore,
        *,
        backend: str,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.datasets = datasets
        self.consents = consents
        self.voices = voices
        self.backend = backend  # "qwen3" or "piper": the kind of training a job gets

    def create(self, tenant_id: str, request: FineTuneRequest, *, key_id: str | None) -> FineTuneRecord:
        self.datasets.get(tenant_id, request.dataset)  # 404 for none, or another tenant's
        speaker = self.datasets.speaker(tenant_id, request.dataset)  # 403 once its consent was deleted
        if speaker.consent_id is not None:
            self.consents.admit(tenant_id, speaker.consent_id)  # 403 when a voice already uses it
        if self.store.uses_dataset(tenant_id, request.dataset):  # its consent can make one voice only
            raise FineTuneConflictError(
                f"a fine-tune of dataset {request.dataset!r} is already queued or running", code="dataset_in_use"
            )
        name = request.name.strip()
        if not name:
            raise InvalidRequestError("name must not be blank", param="name")
        if self.voices.find_by_name(tenant_id, name) is not None:
            raise InvalidRequestError(f"a voice named {name!r} already exists", param="name")
        params = request.model_dump()
        params["name"] = name
        params["targets"] = sorted(set(request.targets), key=ALL_TARGETS.index)
        params["backend"] = self.backend
        steps = request.steps if self.backend == "qwen3" else 1
        return self.store.create(
            tenant_id, dataset_id=request.dataset, name=name, params=params, steps=steps, key_id=key_id
        )

    def loss_curve(self, tenant_id: str, fine_tune_id: str) -> bytes:
        self.store.get(tenant_id, fine_tune_id)  # 404 for another tenant's
        key = loss_curve_key(tenant_id, fine_tune_id)
        if not self.blobs.exists(key):
            raise FineTuneNotFoundError(f"fine-tune {fine_tune_id!r} has no loss curve (yet)", param="fine_tune_id")
        return self.blobs.get(key)


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def fine_tune_object(record: FineTuneRecord) -> dict[str, Any]:
    p = record.params
    settings = {k: p[k] for k in ("rank", "alpha", "targets", "steps", "learning_rate", "batch_size", "seed") if k in p}
    return {
        "id": record.id,
        "object": "fine_tune",
        "status": record.status,
        "name": record.name,
        "dataset": record.dataset_id,
        "backend": p.get("backend"),
        "hyperparameters": settings,
        "step": record.step,
        "steps": record.steps,
        "attempts": record.attempts,
        "created_at": _ts(record.created_at),
        "started_at": _ts(record.started_at),
        "finished_at": _ts(record.finished_at),
        "voice_id": record.voice_id,
        "error": record.error,
        "report": record.report,
    }


def event_object(event: FineTuneEvent) -> dict[str, Any]:
    return {"id": event.id, "object": "fine_tune.event", "type": event.type, "created_at": _ts(event.created_at)} | (
        event.data
    )
