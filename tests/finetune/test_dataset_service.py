"""The dataset service as the trainer uses it (SQLite and a local blob store, real speech): a stored dataset's
clips and speaker, consent revocation, the crash sweep and the cap on validations at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from chorus.consent.phrases import new_phrase
from chorus.consent.service import ConsentService
from chorus.errors import QueueFullError
from chorus.finetune.dataset_service import MAX_VALIDATIONS, DatasetLimits, DatasetService
from chorus.finetune.dataset_speakers import DatasetSpeakerError
from chorus.store import SqlStore, StoreConfig, open_store
from chorus.store.consents import ConsentStore
from chorus.store.datasets import DatasetBlobs, DatasetNotFoundError, DatasetStore, dataset_prefix
from chorus.store.tables import DatasetRow
from chorus.voices.embedding import SpeakerEncoder
from tests.finetune.test_dataset_archive import metadata, tarred
from tests.voices.speech import PARAGRAPH, flite_speak, wav_bytes

TENANT = "tenant-a"


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[DatasetService]:
    sql, blobs = open_store(StoreConfig(), tmp_path)
    consents = ConsentService(ConsentStore(sql, blobs), encoder=SpeakerEncoder())
    yield DatasetService(
        DatasetStore(sql, blobs), consents, encoder=SpeakerEncoder(), limits=DatasetLimits(min_speech_minutes=0.1)
    )
    sql.close()


def consent_of(service: DatasetService, voice: str) -> str:
    """A consent as POST /v1/audio/voice_consents stores it: the recording's speaker embedding."""
    store = service.consents.store
    challenge = store.issue(TENANT, new_phrase(), 60)
    embedding = SpeakerEncoder().embed(*flite_speak(challenge.phrase, voice))
    stored = SpeakerEncoder.to_bytes(embedding)
    record = store.create(TENANT, name=voice, language="en", challenge=challenge, recording=b"wav", embedding=stored)
    return record.id


def test_the_trainer_reads_the_kept_clips_and_the_consented_speaker(service: DatasetService) -> None:
    consent = consent_of(service, "slt")
    files = {f"{n}.wav": wav_bytes(*flite_speak(text)) for n, text in enumerate(PARAGRAPH[:3])}
    rows = [(f"{n}.wav", text) for n, text in enumerate(PARAGRAPH[:3])] + [("none.wav", "Missing.")]
    record, report = service.create(
        TENANT, name="ada", consent_id=consent, archive=tarred({"metadata.csv": metadata(rows), **files})
    )
    assert (record.num_clips, record.num_kept, record.archive_kind) == (4, 3, "tar")
    assert service.report(record) == report

    clips = service.clips(TENANT, record.id)
    assert [(c.file_name, c.text, c.sample_rate) for c in clips] == [
        (f"{n}.wav", PARAGRAPH[n], 16_000) for n in range(3)
    ]
    first, _ = flite_speak(PARAGRAPH[0])
    assert clips[0].audio.dtype == np.float32 and clips[0].audio.ndim == 1
    assert np.abs(clips[0].audio - first).max() < 1e-4  # 16-bit WAV round trip
    file_name, audio, sample_rate, text = service.clips(TENANT, record.id, sample_rate=24_000)[1]
    assert (file_name, sample_rate, text) == ("1.wav", 24_000, PARAGRAPH[1])
    assert audio.size == pytest.approx(clips[1].audio.size * 1.5, abs=2)

    speaker = service.speaker(TENANT, record.id)
    assert speaker.consent_id == consent and speaker.embedding.shape == (256,)
    consent_embedding = SpeakerEncoder.from_bytes(service.consents.store.get(TENANT, consent).embedding)
    assert SpeakerEncoder.similarity(speaker.embedding, consent_embedding) > 0.75

    with pytest.raises(DatasetNotFoundError):
        service.clips("tenant-b", record.id)
    service.consents.store.delete(TENANT, consent)  # revoked: training may not use the dataset any more
    with pytest.raises(DatasetSpeakerError) as revoked:
        service.speaker(TENANT, record.id)
    assert (revoked.value.code, revoked.value.status_code) == ("consent_revoked", 403)

    service.delete(TENANT, record.id)
    assert service.list(TENANT) == [] and not service.store.blobs.exists(f"{dataset_prefix(TENANT, record.id)}/archive")


def test_a_crashed_create_is_swept_and_validations_are_capped(service: DatasetService) -> None:
    store = service.store
    content = DatasetBlobs(b"a", b"m", b"r", b"e")
    record = store.create(
        TENANT,
        name="x",
        consent_id=None,
        language="en",
        archive_kind="zip",
        content=content,
        num_clips=1,
        num_kept=1,
        speech_s=1.0,
    )
    sql: SqlStore = store.sql
    with sql.session() as session:  # as a process killed between its blobs and "ready" leaves it
        row = session.get(DatasetRow, record.id)
        assert row is not None
        row.status = "pending"
        session.commit()
    assert store.list(TENANT) == [] and store.sweep_pending(3600) == []  # too young: maybe still being written
    assert store.sweep_pending(0) == [record.id]
    assert not store.blobs.exists(f"{dataset_prefix(TENANT, record.id)}/archive")

    for _ in range(MAX_VALIDATIONS):
        service._slots.acquire()
    with pytest.raises(QueueFullError) as busy:
        service.create(TENANT, name="y", consent_id=None, archive=b"")
    assert busy.value.code == "datasets_busy" and busy.value.retry_after_s > 0
