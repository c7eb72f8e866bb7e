"""Training datasets: validated at upload, stored per tenant, read back by the trainer.

``create`` runs, in order, failing fast and storing nothing on a refusal:

1. the consent: an id of the caller's tenant (404 otherwise; 403 ``consent_required`` without one while
   ``safety.require_consent`` is on);
2. the archive (``chorus.finetune.dataset_archive``): layout, safety and size limits (400 / 413);
3. every clip named in metadata.csv is decoded and measured, duplicates found (``chorus.finetune.dataset_report``);
4. too little speech left (``finetune.min_dataset_minutes``) → 422 ``too_little_speech``, the report attached;
5. transcripts (English datasets): up to ``MAX_TRANSCRIPT_CHECKS`` kept clips, evenly spread, are decoded by the
   offline recogniser against their text; mismatches are excluded (step 4 again);
6. the speaker (``chorus.finetune.dataset_speakers``): ``finetune.speaker_check_clips`` clips, evenly spread over
   those kept after step 3, against the consent recording and each other → 403 ``speaker_mismatch`` /
   ``mixed_speakers``, clips named;
7. the archive, manifest (kept clips and their text), report and mean speaker embedding are stored.

The trainer reads a dataset with ``clips`` (the kept clips' audio and text) and ``speaker`` (its consent id and
speaker embedding; refused once the consent is deleted: deleting a consent revokes it).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

import numpy as np

from chorus.audio.decode import decode_audio
from chorus.config import FinetuneConfig
from chorus.consent.service import ConsentService
from chorus.errors import ChorusError, InvalidRequestError, NotFoundError, QueueFullError
from chorus.finetune.dataset_archive import (
    ArchiveIndex,
    ArchiveKind,
    ArchiveLimits,
    DatasetArchiveError,
    index_archive,
    read_members,
)
from chorus.finetune.dataset_report import (
    ANALYSIS_RATE,
    ClipReport,
    analyse_clip,
    evenly,
    kept_speech_minutes,
    mark_duplicates,
    totals,
)
from chorus.finetune.dataset_speakers import DatasetSpeakerError, Embedder, SpeakerCheck, check_speakers
from chorus.finetune.dataset_transcripts import MAX_WER, TranscriptChecker
from chorus.store.consents import ConsentNotFoundError
from chorus.store.datasets import DatasetBlobs, DatasetRecord, DatasetStore
from chorus.voices.embedding import SpeakerEncoder

MAX_TRANSCRIPT_CHECKS = 32
# Datasets validated at once by one server (each holds its archive in memory); more get 429 + Retry-After.
MAX_VALIDATIONS = 2
BUSY_RETRY_S = 30.0
MAX_NAME_LEN = 200
# Stored archives passed the limits when they were uploaded; reading them back must not depend on today's.
STORED_LIMITS = ArchiveLimits(max_bytes=1 << 50, max_clips=10_000_000)


class DatasetRefusedError(ChorusError):
    """The archive is readable but not a usable dataset (``too_little_speech``, ``no_usable_clips``); ``report``
    is its validation report."""

    status_code = 422
    error_type = "invalid_request_error"

    def __init__(self, code: str, message: str, report: dict[str, object]) -> None:
        super().__init__(message, param="archive")
        self.code = code
        self.report = report


class DatasetConsentNotFoundError(NotFoundError):
    """The consent id names no consent of the caller's tenant."""


class TrainingClip(NamedTuple):
    file_name: str
    audio: np.ndarray  # float32 mono, [-1, 1]
    sample_rate: int
    text: str


@dataclass(frozen=True, slots=True)
class DatasetSpeaker:
    consent_id: str | None  # None only on a server run with safety.require_consent off
    embedding: np.ndarray  # (256,) float32 GE2E, unit length: the mean over the clips checked at upload


@dataclass(frozen=True, slots=True)
class DatasetLimits:
    min_speech_minutes: float = 5.0
    max_bytes: int = 2 * 1024**3
    max_clips: int = 20_000
    speaker_check_clips: int = 8

    @classmethod
    def from_config(cls, config: FinetuneConfig) -> DatasetLimits:
        return cls(
            config.min_dataset_minutes, config.max_dataset_bytes, config.max_dataset_clips, config.speaker_check_clips
        )

    @property
    def archive(self) -> ArchiveLimits:
        return ArchiveLimits(max_bytes=self.max_bytes, max_clips=self.max_clips)


class DatasetService:
    def __init__(
        self,
        store: DatasetStore,
        consents: ConsentService,
        *,
        encoder: Embedder,
        checker: TranscriptChecker | None = None,
        limits: DatasetLimits | None = None,
    ) -> None:
        self.store = store
        self.consents = consents
        self.encoder = encoder
        self.checker = checker or TranscriptChecker()
        self.limits = limits or DatasetLimits()
        self._slots = threading.BoundedSemaphore(MAX_VALIDATIONS)

    def create(
        self,
        tenant_id: str,
        *,
        name: str,
        consent_id: str | None,
        archive: bytes | BinaryIO,
        language: str | None = None,
    ) -> tuple[DatasetRecord, dict[str, object]]:
        """Validate and store a dataset: its record and validation report. ``archive``: the bytes, or a file to
        read them from (read here, once, bounded by ``max_bytes``)."""
        name, language = _check_name(name), _check_language(language)
        if not self._slots.acquire(blocking=False):
            raise QueueFullError(
                f"{MAX_VALIDATIONS} datasets are being validated; retry shortly",
                retry_after_s=BUSY_RETRY_S,
                code="datasets_busy",
            )
        try:
            consent = self._consent_embedding(tenant_id, consent_id)
            data = _read_limited(archive, self.limits.max_bytes)
            index = index_archive(data, self.limits.archive)
            clips = self._measure(data, index)
            self._check_speech(clips, None)
            kept = [c for c in clips if c.is_kept]
            to_transcribe = evenly(kept, MAX_TRANSCRIPT_CHECKS) if language.lower().startswith("en") else []
            to_compare = evenly(kept, self.limits.speaker_check_clips)
            audio = self._sample_audio(data, index, to_transcribe + to_compare)
            transcripts = self._check_transcripts(to_transcribe, audio, language)
            self._check_speech(clips, transcripts)
            speaker = check_speakers(
                [(c.file_name, audio[c.file_name], ANALYSIS_RATE) for c in to_compare],
                encoder=self.encoder,
                consent=consent,
                threshold=self.consents.policy.speaker_threshold,
                consent_id=consent_id,
            )
            report = _report(clips, transcripts, speaker, consent_id, self.limits)
            manifest = {
                "version": 1,
                "clips": [
                    {"file_name": c.file_name, "member": index.audio[c.file_name], "text": c.text}
                    for c in clips
                    if c.is_kept
                ],
            }
            content = DatasetBlobs(
                archive=data,
                manifest=json.dumps(manifest).encode(),
                report=json.dumps(report).encode(),
                embedding=SpeakerEncoder.to_bytes(speaker.embedding),
            )
            record = self.store.create(
                tenant_id,
                name=name,
                consent_id=consent_id.strip() if consent_id else None,
                language=language,
                archive_kind=index.kind,
                content=content,
                num_clips=len(clips),
                num_kept=sum(c.is_kept for c in clips),
                speech_s=kept_speech_minutes(clips) * 60.0,
            )
            return record, report
        finally:
            self._slots.release()

    # -- reading -------------------------------------------------------------------------------------

    def get(self, tenant_id: str, dataset_id: str) -> DatasetRecord:
        return self.store.get(tenant_id, dataset_id)

    def list(self, tenant_id: str, *, limit: int = 100, before: str | None = None) -> builtins.list[DatasetRecord]:
        return self.store.list(tenant_id, limit=limit, before=before)

    def report(self, record: DatasetRecord) -> dict[str, object]:
        report: dict[str, object] = json.loads(self.store.read_blob(record, "report"))
        return report

    def delete(self, tenant_id: str, dataset_id: str) -> DatasetRecord:
        return self.store.delete(tenant_id, dataset_id)

    def clips(self, tenant_id: str, dataset_id: str, *, sample_rate: int | None = None) -> builtins.list[TrainingClip]:
        """The kept clips, decoded to mono float32 at their own rate (or ``sample_rate``), in the archive's order
        (the same on every call)."""
        return list(self.iter_clips(tenant_id, dataset_id, sample_rate=sample_rate))

    def iter_clips(self, tenant_id: str, dataset_id: str, *, sample_rate: int | None = None) -> Iterator[TrainingClip]:
        """As ``clips``, one at a time (for datasets too large to hold decoded at once)."""
        record = self.store.get(tenant_id, dataset_id)
        manifest = json.loads(self.store.read_blob(record, "manifest"))
        by_member = {c["member"]: c for c in manifest["clips"]}
        archive = self.store.read_blob(record, "archive")
        kind: ArchiveKind = "zip" if record.archive_kind == "zip" else "tar"
        for member, data in read_members(archive, kind, by_member, STORED_LIMITS):
            audio, rate = decode_audio(data, sample_rate=sample_rate)
            yield TrainingClip(by_member[member]["file_name"], audio, rate, by_member[member]["text"])

    def speaker(self, tenant_id: str, dataset_id: str) -> DatasetSpeaker:
        """Whose voice the dataset is: its consent (still on record: 403 ``consent_revoked`` once deleted) and
        speaker embedding. The trainer asks this before every run."""
        record = self.store.get(tenant_id, dataset_id)
        if record.consent_id is not None:
            try:
                self.consents.store.get(tenant_id, record.consent_id)
            except ConsentNotFoundError:
                raise DatasetSpeakerError(
                    "consent_revoked", f"consent {record.consent_id} of dataset {dataset_id} was deleted"
                ) from None
        return DatasetSpeaker(record.consent_id, SpeakerEncoder.from_bytes(self.store.read_blob(record, "embedding")))

    # -- steps of create -----------------------------------------------------------------------------

    def _consent_embedding(self, tenant_id: str, consent_id: str | None) -> np.ndarray | None:
        if consent_id is None or not consent_id.strip():
            if self.consents.policy.require_consent:
                raise DatasetSpeakerError(
                    "consent_required",
                    "a dataset needs its speaker's recorded consent: POST /v1/audio/voice_consents/challenges, "
                    "record the phrase, POST /v1/audio/voice_consents, then pass its id as consent",
                )
            return None
        try:
            consent = self.consents.store.get(tenant_id, consent_id.strip())
        except ConsentNotFoundError:
            raise DatasetConsentNotFoundError(f"no consent {consent_id!r}", param="consent") from None
        return SpeakerEncoder.from_bytes(consent.embedding)

    def _measure(self, data: bytes, index: ArchiveIndex) -> builtins.list[ClipReport]:
        """A report line per metadata row, then per audio file no row names; every named file measured."""
        clips: builtins.list[ClipReport] = []
        by_member: dict[str, ClipReport] = {}
        listed: set[str] = set()
        for row in index.rows:
            clip = ClipReport(row.file_name, row.text)
            member = index.audio.get(row.file_name)
            if row.file_name in listed:
                clip.problems.append("duplicate_row")
            elif member is None:
                clip.problems.append("missing_file")
            else:
                by_member[member] = clip
            if not row.text:
                clip.problems.append("missing_transcript")
            listed.add(row.file_name)
            clips.append(clip)
        clips += [ClipReport(f, None, ["not_in_metadata"]) for f in index.audio if f not in listed]
        prints = {}
        for member, content in read_members(data, index.kind, by_member, self.limits.archive):
            clip = by_member[member]
            measured = analyse_clip(clip, content)
            if measured is not None:
                prints[clip.file_name] = measured
        mark_duplicates(clips, prints)
        return clips

    def _check_speech(self, clips: Sequence[ClipReport], transcripts: dict[str, object] | None) -> None:
        minutes = kept_speech_minutes(clips)
        kept = sum(c.is_kept for c in clips)
        if kept and minutes >= self.limits.min_speech_minutes:
            return
        report = _report(clips, transcripts, None, None, self.limits)
        if not kept:
            raise DatasetRefusedError("no_usable_clips", f"none of the {len(clips)} clips is usable", report)
        raise DatasetRefusedError(
            "too_little_speech",
            f"the {kept} usable clips (of {len(clips)}) hold {minutes:.2f} min of speech; "
            f"at least {self.limits.min_speech_minutes:g} min are needed",
            report,
        )

    def _sample_audio(self, data: bytes, index: ArchiveIndex, clips: Sequence[ClipReport]) -> dict[str, np.ndarray]:
        """The sampled clips' audio, mono at ``ANALYSIS_RATE``, by file_name."""
        members = {index.audio[c.file_name]: c.file_name for c in clips}
        audio = {}
        for member, content in read_members(data, index.kind, members, self.limits.archive):
            audio[members[member]] = decode_audio(content, sample_rate=ANALYSIS_RATE)[0]
        return audio

    def _check_transcripts(
        self, clips: Sequence[ClipReport], audio: dict[str, np.ndarray], language: str
    ) -> dict[str, object]:
        if not clips:
            return {"checked": 0, "reason": f"the offline recogniser knows English only (language {language!r})"}
        for clip in clips:
            clip.transcript = self.checker.check_transcript(audio[clip.file_name], ANALYSIS_RATE, clip.text or "")
            if clip.transcript.status == "mismatch":
                clip.problems.append("transcript_mismatch")
        statuses = [c.transcript.status for c in clips if c.transcript is not None]
        return {
            "sampled": len(clips),
            "checked": sum(s != "unchecked" for s in statuses),
            "mismatched": statuses.count("mismatch"),
            "unchecked": statuses.count("unchecked"),
            "max_wer": MAX_WER,
        }


def _report(
    clips: Sequence[ClipReport],
    transcripts: dict[str, object] | None,
    speaker: SpeakerCheck | None,
    consent_id: str | None,
    limits: DatasetLimits,
) -> dict[str, object]:
    return {
        "totals": totals(clips),
        "min_speech_minutes": limits.min_speech_minutes,
        "transcripts": transcripts,
        "speaker": speaker.to_json(consent_id) if speaker is not None else None,
        "clips": [c.to_json() for c in clips],
    }


def _read_limited(archive: bytes | BinaryIO, max_bytes: int) -> bytes:
    data = archive if isinstance(archive, bytes) else archive.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DatasetArchiveError("too_large", f"the archive upload is over the {max_bytes / 2**20:.1f} MiB limit")
    if not data:
        raise DatasetArchiveError("not_an_archive", "the archive upload is empty")
    return data


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LEN or any(not c.isprintable() for c in name):
        raise InvalidRequestError(f"name must be 1-{MAX_NAME_LEN} printable characters", param="name")
    return name


def _check_language(language: str | None) -> str:
    code = (language or "en").strip() or "en"
    if len(code) > 32 or not all(c.isalnum() or c in "-_" for c in code):
        raise InvalidRequestError("language must be a language code such as en or en-US", param="language")
    return code
