"""``chorus worker --queue finetune``: the process that trains fine-tunes, apart from the servers.

It takes one job at a time from SQL (``chorus.store.fine_tunes``: a lease, renewed by a heartbeat thread), trains
it below live traffic (the process lowers its own CPU priority; training runs on as many torch threads as its
config says, 1 by default), and registers the result as a voice of the job's tenant, under the dataset's
consent, through the same ``VoiceService.register`` a zero-shot voice goes through (the consent's speaker is
checked against the reference clip once more, and the consent is claimed by the new voice).

Stopping: SIGTERM or SIGINT (a spot/preemptible reclaim notice) finishes the current step, saves a checkpoint,
gives the job back queued and exits 0; the next worker resumes it bit-identically. A SIGKILLed worker's lease
expires and another worker resumes from the last periodic checkpoint. A cancelled job's lease can no longer be
renewed: the worker stops at its next heartbeat. On Piper the job fits the voice converter on the whole dataset
(seconds to minutes: no checkpoints; a preempted fit starts again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, cast

from chorus.audio.encode import make_encoder, sized_wav
from chorus.config import Settings
from chorus.consent.service import ConsentService
from chorus.errors import ChorusError
from chorus.finetune.dataset_service import DatasetLimits, DatasetService, TrainingClip
from chorus.finetune.jobs import TrainOutcome, loss_curve_key, training_kind
from chorus.jobs.runner import worker_name
from chorus.models.base import Backend, ReferenceVoice, VoiceInfo
from chorus.models.cloning import voice_model
from chorus.store.blobs import BlobStore
from chorus.store.consents import ConsentStore
from chorus.store.datasets import DatasetStore
from chorus.store.fine_tunes import FineTuneLease, FineTuneStore
from chorus.store.sql import SqlStore
from chorus.store.voices import VoiceStore
from chorus.voices.catalog import VoiceCatalog
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.service import VoiceService

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
POLL_S = 2.0
NICE = 10  # below a server on the same machine


class _Prebuilt:
    """A voice cloner whose ``build_voice`` returns the model the fine-tune made (the registration's checks, the
    store and the consent claim are VoiceService's own)."""

    can_clone = True

    def __init__(self, backend: Backend, model: bytes) -> None:
        self.name = backend.name
        self.model = model
        self.voice_model_format = voice_model.format_of(model) or ""

    def voices(self) -> list[VoiceInfo]:
        return []

    def build_voice(self, voice: ReferenceVoice) -> bytes:
        return self.model

    def load_voice(self, voice_id: str, data: bytes, language: str = "auto") -> None:
        pass

    def has_voice(self, voice_id: str) -> bool:
        return False

    def unload_voice(self, voice_id: str) -> None:
        pass


class FineTuneWorker:
    def __init__(self, settings: Settings, backend: Backend, sql: SqlStore, blobs: BlobStore) -> None:
        from chorus.server.app import consent_policy

        self.settings = settings
        self.backend = backend
        self.kind = training_kind(backend)
        self.blobs = blobs
        self.store = FineTuneStore(sql)
        self.encoder = SpeakerEncoder()
        self.consents = ConsentService(ConsentStore(sql, blobs), encoder=self.encoder, policy=consent_policy(settings))
        self.datasets = DatasetService(
            DatasetStore(sql, blobs),
            self.consents,
            encoder=self.encoder,
            limits=DatasetLimits.from_config(settings.finetune),
        )
        self.voices = VoiceStore(sql, blobs)
        self.owner = worker_name()
        self.stopping = threading.Event()
        self.lease_s = settings.finetune.lease_s

    def install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current step, then checkpointing and giving the job back", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self, *, once: bool = False) -> int:
        """Take jobs until stopped (``once``: at most one job, then return). Exit status 0."""
        with contextlib.suppress(OSError):  # not permitted: stay at the priority we have
            os.nice(NICE)
        log.info("fine-tune worker %s: %s backend, lease %.0f s", self.owner, self.kind, self.lease_s)
        while not self.stopping.is_set():
            lease = self.store.claim(self.owner, self.lease_s, MAX_ATTEMPTS)
            if lease is None:
                if once:
                    return 0
                self.stopping.wait(POLL_S)
                continue
            self.run_job(lease)
            if once:
                return 0
        return 0

    def run_job(self, lease: FineTuneLease) -> None:
        job = lease.job
        log.info("fine-tune %s: attempt %d, from step %d", job.id, lease.attempt, job.step)
        step = [job.step]
        lost = threading.Event()
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.lease_s / 3):
                if not self.store.renew(lease, self.lease_s, step=step[0]) and not done.is_set():
                    log.warning("fine-tune %s: lease lost (cancelled, or taken over): stopping", job.id)
                    lost.set()
                    return

        beat = threading.Thread(target=heartbeat, name=f"chorus-finetune-{job.id}", daemon=True)
        beat.start()
        try:
            if job.params.get("backend") != self.kind:
                raise _JobError(
                    "model_mismatch",
                    f"the job is for a {job.params.get('backend')} model; this worker runs {self.kind}",
                )
            speaker = self.datasets.speaker(job.tenant_id, job.dataset_id)
            clips = self.datasets.clips(job.tenant_id, job.dataset_id)

            def should_stop() -> bool:
                return self.stopping.is_set() or lost.is_set()

            def on_step(data: dict[str, Any]) -> None:
                step[0] = int(data["step"])
                every = max(1, job.steps // 200)
                if step[0] % every == 0 or step[0] == job.steps:
                    self.store.progress(lease, data)

            outcome = self._train(lease, clips, should_stop, on_step)
            if outcome.status != "succeeded" or outcome.model is None or outcome.reference is None:
                done.set()  # the heartbeat stops renewing: the job's row is about to change hands
                if not lost.is_set():
                    self.store.release(lease, step=outcome.step)
                    log.info("fine-tune %s: preempted at step %d, given back", job.id, outcome.step)
                return
            losses = (outcome.report or {}).get("losses")
            if losses:
                from chorus.finetune.qwen3_job import loss_curve_png

                png = loss_curve_png(losses, f"fine-tune {job.id} ({job.name})")
                if png is not None:
                    self.blobs.put(loss_curve_key(job.tenant_id, job.id), png)
                    (outcome.report or {})["loss_curve"] = f"/v1/fine_tunes/{job.id}/loss.png"
            record = self._register(lease, speaker.consent_id, outcome.model, outcome.reference)
            done.set()
            if not self.store.succeed(lease, voice_id=record.id, report=outcome.report or {}):
                log.warning("fine-tune %s: finished after losing its lease: its voice is removed", job.id)
                self.voices.delete(job.tenant_id, record.id)
                return
            self._checkpoints(lease).clear()
            log.info("fine-tune %s: succeeded, voice %s", job.id, record.id)
        except ChorusError as e:
            self.store.fail(lease, getattr(e, "code", None) or "fine_tune_failed", e.message)
        except Exception as e:
            log.exception("fine-tune %s failed", job.id)
            self.store.fail(lease, "fine_tune_failed", f"{type(e).__name__}: {e}"[:500])
        finally:
            done.set()
            beat.join()

    # -- internals -------------------------------------------------------------------------------

    def _checkpoints(self, lease: FineTuneLease) -> Any:
        from chorus.finetune.checkpoint import BlobCheckpoints

        return BlobCheckpoints(self.blobs, f"fine_tunes/{lease.job.tenant_id}/{lease.job.id}/checkpoints")

    def _train(self, lease: FineTuneLease, clips: list[TrainingClip], should_stop: Any, on_step: Any) -> TrainOutcome:
        job = lease.job
        if self.kind == "qwen3":
            from chorus.finetune.qwen3_job import train_qwen3

            path = self.settings.model.local_path
            assert path is not None  # a Qwen3 backend is only built from a local path
            return train_qwen3(
                self.backend,
                Path(path),
                clips,
                job.params,
                blobs=self.blobs,
                checkpoint_prefix=self._checkpoints(lease).prefix,
                checkpoint_every=self.settings.finetune.checkpoint_every,
                should_stop=should_stop,
                on_step=on_step,
                encoder=self.encoder,
            )
        from chorus.finetune.piper_voice import DEFAULT_HOLDOUT, PiperTrainingStopped, train_piper_voice
        from chorus.models.piper import PiperBackend

        try:
            result = train_piper_voice(
                cast(PiperBackend, self.backend),
                clips,
                holdout=max(1, min(DEFAULT_HOLDOUT, (len(clips) - 2) // 3)),  # a quarter of a small dataset
                seed=int(job.params.get("seed", 0)),
                should_stop=should_stop,
                encoder=self.encoder,
            )
        except PiperTrainingStopped:
            return TrainOutcome("preempted", 0)  # a fit takes minutes at most: the next worker starts it again
        on_step({"step": 1, "steps": 1})
        return TrainOutcome("succeeded", 1, result.model, result.report, clips[result.reference_index])

    def _register(self, lease: FineTuneLease, consent_id: str | None, model: bytes, reference: TrainingClip) -> Any:
        job = lease.job
        catalog = VoiceCatalog(self.backend.voices())
        service = VoiceService(
            self.voices,
            catalog,
            cast(Backend, _Prebuilt(self.backend, model)),
            encoder=self.encoder,
            consents=self.consents,
        )
        record = self.datasets.get(job.tenant_id, job.dataset_id)
        language = record.language if job.params.get("language", "auto") == "auto" else job.params["language"]
        return service.register(
            job.tenant_id, name=job.name, audio=_wav(reference), ref_text=None, language=language, consent=consent_id
        )


class _JobError(ChorusError):
    status_code = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _wav(clip: TrainingClip) -> bytes:
    encoder = make_encoder("wav", clip.sample_rate)
    return sized_wav(encoder.encode(clip.audio) + encoder.finish())
