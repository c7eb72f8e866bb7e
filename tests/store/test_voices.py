"""VoiceStore on the three backends: lifecycle, unique names, tenant isolation, clean-up of failed creates."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest

from chorus.errors import ChorusError, InvalidRequestError, NotFoundError
from chorus.store import TenantNotFoundError, VoiceExistsError, VoiceNotFoundError, VoiceRecord, VoiceStore
from chorus.store.tables import VoiceRow, utcnow
from chorus.store.voices import voice_prefix

ORIGINAL, PROCESSED, EMBEDDING = b"original-bytes" * 100, b"processed-pcm" * 100, b"\x01\x02" * 64


def make(store: VoiceStore, tenant: str = "default", name: str = "alice", **kw: Any) -> VoiceRecord:
    args: dict[str, Any] = {"duration_s": 4.25, "sample_rate": 24_000} | kw
    return store.create(tenant, name, "en", "Hello there.", ORIGINAL, PROCESSED, EMBEDDING, **args)


def blob_keys(record: VoiceRecord) -> list[str]:
    keys = [record.original_key, record.processed_key, record.embedding_key, record.conversion_key]
    return [k for k in keys if k is not None]


def test_create_list_get_delete(voices: VoiceStore) -> None:
    record = make(voices, conversion=b"conv")
    assert record.status == "ready"
    assert record.id.startswith("voice_") and len(record.id) == 30
    assert (record.name, record.language, record.ref_text) == ("alice", "en", "Hello there.")
    assert (record.duration_s, record.sample_rate) == (4.25, 24_000)
    assert (record.consent_status, record.consent_id) == ("none", None)
    assert record.created_at.tzinfo is not None
    assert all(k.startswith(voice_prefix("default", record.id) + "/") for k in blob_keys(record))
    assert voices.list("default") == [record]
    assert voices.get("default", record.id) == record
    assert voices.read_blob(record, "processed") == PROCESSED
    assert voices.read_blob(record, "embedding") == EMBEDDING
    assert voices.read_blob(record, "conversion") == b"conv"
    assert record.processed_sha256 == hashlib.sha256(PROCESSED).hexdigest()

    voices.delete("default", record.id)
    assert voices.list("default") == []
    assert not any(voices.blobs.exists(k) for k in blob_keys(record))
    with pytest.raises(VoiceNotFoundError):
        voices.get("default", record.id)
    with pytest.raises(VoiceNotFoundError):
        voices.delete("default", record.id)


def test_list_is_oldest_first_and_conversion_is_optional(voices: VoiceStore) -> None:
    first = make(voices, name="one")
    second = make(voices, name="two")
    assert [v.name for v in voices.list("default")] == ["one", "two"]
    assert first.conversion_key is None and second.conversion_key is None
    with pytest.raises(KeyError):
        voices.read_blob(first, "conversion")


def test_duplicate_name_is_409(voices: VoiceStore) -> None:
    make(voices)
    with pytest.raises(VoiceExistsError) as info:
        make(voices)
    assert isinstance(info.value, ChorusError) and info.value.status_code == 409 and info.value.param == "name"
    assert len(voices.list("default")) == 1
    make(voices, tenant="acme")  # names are unique per tenant only
    with pytest.raises(VoiceExistsError):
        make(voices, name="ALICE")  # ignoring case, as speech requests match names
    assert voices.find_by_name("default", "aLiCe") == voices.list("default")[0]
    assert voices.find_by_name("default", "bob") is None


def test_a_crashed_registration_does_not_hold_its_name(voices: VoiceStore) -> None:
    """A pending row (a create that died before "ready") is invisible and blocks nothing: the retry succeeds."""

    def die_after_blobs(stage: str, voice_id: str) -> None:
        if stage == "blobs_written":
            raise KeyboardInterrupt  # stands in for the process dying: the except clause below never runs in one

    class Killed(VoiceStore):
        def _discard(self, tenant_id: str, voice_id: str) -> None:  # a dead process cleans nothing up
            pass

    with pytest.raises(KeyboardInterrupt):
        make(Killed(voices.sql, voices.blobs, on_stage=die_after_blobs))
    assert voices.list("default") == []
    retried = make(voices)
    assert voices.list("default") == [retried]


def test_racing_registrations_of_one_name_leave_one_voice(voices: VoiceStore) -> None:
    """Both pass the early name check; the one that turns ready second gets 409 and leaves nothing behind."""
    loser_id: list[str] = []

    def let_the_other_finish_first(stage: str, voice_id: str) -> None:
        if stage == "blobs_written" and not loser_id:
            loser_id.append(voice_id)
            make(voices)

    with pytest.raises(VoiceExistsError):
        make(VoiceStore(voices.sql, voices.blobs, on_stage=let_the_other_finish_first))
    (winner,) = voices.list("default")
    assert winner.id != loser_id[0]
    assert not voices.blobs.exists(f"{voice_prefix('default', loser_id[0])}/original")
    assert voices.sweep_pending(0) == []


def test_tenant_isolation(voices: VoiceStore) -> None:
    mine = make(voices, tenant="default")
    assert voices.list("acme") == []
    with pytest.raises(VoiceNotFoundError) as info:
        voices.get("acme", mine.id)
    assert isinstance(info.value, NotFoundError) and info.value.status_code == 404
    with pytest.raises(VoiceNotFoundError):
        voices.delete("acme", mine.id)
    assert voices.get("default", mine.id) == mine
    assert all(voices.blobs.exists(k) for k in blob_keys(mine))
    theirs = make(voices, tenant="acme")
    assert voices.list("acme") == [theirs] and voices.list("default") == [mine]


def test_unknown_tenant_and_bad_input(voices: VoiceStore) -> None:
    with pytest.raises(TenantNotFoundError):
        make(voices, tenant="nobody")
    with pytest.raises(ValueError):
        make(voices, tenant="../x")
    with pytest.raises(InvalidRequestError):
        make(voices, name="  ")
    with pytest.raises(InvalidRequestError):
        make(voices, name="x" * 201)
    assert voices.list("default") == []


class Boom(Exception):
    pass


def test_failed_create_cleans_up(voices: VoiceStore) -> None:
    """An error between two blob writes removes the row and the blobs written so far, and frees the name."""
    seen: list[str] = []

    def fail_after_first_blob(stage: str, voice_id: str) -> None:
        seen.append(voice_id)
        if stage == "blob_written:original":
            raise Boom

    failing = VoiceStore(voices.sql, voices.blobs, on_stage=fail_after_first_blob)
    with pytest.raises(Boom):
        make(failing)
    assert voices.list("default") == []
    assert not voices.blobs.exists(f"{voice_prefix('default', seen[0])}/original")
    assert voices.sweep_pending(0) == []  # nothing was left behind
    assert make(voices).name == "alice"


def test_sweep_removes_only_old_pending_voices(voices: VoiceStore) -> None:
    ready = make(voices, name="ready")
    # What a crash leaves: a pending row and part of its blobs.
    orphan = VoiceRow(
        id="voice_orphan",
        tenant_id="default",
        name="orphan",
        language="en",
        ref_text=None,
        status="pending",
        original_sha256="0" * 64,
        processed_sha256="0" * 64,
        original_key="voices/default/voice_orphan/original",
        processed_key="voices/default/voice_orphan/processed",
        embedding_key="voices/default/voice_orphan/embedding",
        conversion_key=None,
        duration_s=1.0,
        sample_rate=24_000,
        created_at=utcnow() - timedelta(seconds=60),
    )
    with voices.sql.session() as session:
        session.add(orphan)
        session.commit()
    voices.blobs.put("voices/default/voice_orphan/original", b"partial")
    assert voices.list("default") == [ready]
    with pytest.raises(VoiceNotFoundError):
        voices.get("default", "voice_orphan")

    assert voices.sweep_pending(3600) == []  # younger than the cut-off: maybe a create still running elsewhere
    assert voices.blobs.exists("voices/default/voice_orphan/original")
    assert voices.sweep_pending(30) == ["voice_orphan"]
    assert not voices.blobs.exists("voices/default/voice_orphan/original")
    assert voices.sweep_pending(0) == []
    assert voices.list("default") == [ready]
    assert voices.read_blob(ready, "original") == ORIGINAL
    make(voices, name="orphan")  # the name is free again
