"""VoiceService on a real SQLite store and the real Piper voice: per-voice work happens once per process, a
stored model made for another backend is rebuilt from the stored reference, and names resolve as documented."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chorus.errors import InvalidRequestError
from chorus.models.cloning import voice_model
from chorus.models.piper import PiperBackend
from chorus.store import VoiceExistsError, VoiceStore, open_store
from chorus.store.settings import StoreConfig
from chorus.voices.catalog import VoiceCatalog
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.service import VoiceService
from tests.voices.speech import SENTENCE, speak, wav_bytes


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[VoiceStore]:
    sql, blobs = open_store(StoreConfig(), tmp_path)
    yield VoiceStore(sql, blobs)
    sql.close()


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def service(store: VoiceStore, piper: PiperBackend, encoder: SpeakerEncoder) -> VoiceService:
    """A fresh service, as a new process (or replica) would have, over the shared backend."""
    return VoiceService(store, VoiceCatalog(piper.voices()), piper, encoder=encoder)


def register(svc: VoiceService, name: str = "Robin") -> str:
    audio, rate = speak(SENTENCE, "en-gb-x-rp")
    record = svc.register("default", name=name, audio=wav_bytes(audio, rate), ref_text=SENTENCE, language=None)
    return record.id


def test_concurrent_first_uses_load_the_stored_model_once(
    store: VoiceStore, piper: PiperBackend, encoder: SpeakerEncoder
) -> None:
    first = service(store, piper, encoder)
    voice_id = register(first)
    assert first.counts == {"embedded": 1, "built": 1}
    assert first.resolve("default", "robin") == voice_id  # registered here: already installed
    piper.unload_voice(voice_id)

    other = service(store, piper, encoder)
    with ThreadPoolExecutor(8) as pool:
        resolved = list(pool.map(lambda _: other.resolve("default", voice_id), range(16)))
    assert resolved == [voice_id] * 16
    assert other.counts == {"loaded": 1}
    piper.unload_voice(voice_id)

    # The stored embedding, read once into the cache, equals what registration computed.
    record = store.get("default", voice_id)
    stored = other.embedding(record)
    assert other.embedding(record) is stored and other.embeddings.computations == 1
    assert SpeakerEncoder.similarity(stored, first.embedding(record)) == pytest.approx(1.0)
    assert first.embeddings.computations == 1  # registration put it in its cache: no read


def test_a_model_made_for_another_backend_is_rebuilt_from_the_reference(
    store: VoiceStore, piper: PiperBackend, encoder: SpeakerEncoder
) -> None:
    voice_id = register(service(store, piper, encoder))
    piper.unload_voice(voice_id)
    record = store.get("default", voice_id)
    assert record.conversion_key is not None
    store.blobs.put(record.conversion_key, voice_model.pack("qwen3-prompt-1:some-checkpoint:0", b"tensors"))

    fresh = service(store, piper, encoder)
    assert fresh.resolve("default", "Robin") == voice_id
    assert fresh.resolve("default", "Robin") == voice_id
    assert fresh.counts == {"rebuilt": 1}
    assert piper.has_voice(voice_id)
    piper.unload_voice(voice_id)


def test_names(store: VoiceStore, piper: PiperBackend, encoder: SpeakerEncoder) -> None:
    svc = service(store, piper, encoder)
    assert svc.resolve("default", None) == piper.voice_id
    assert svc.resolve("default", "alloy") == piper.voice_id  # OpenAI's names speak with the default voice
    assert svc.builtin_id("JOE") == piper.voice_id
    for taken in ("alloy", piper.voice_id.upper()):
        with pytest.raises(VoiceExistsError):
            register(svc, taken)
    with pytest.raises(InvalidRequestError, match="unknown voice"):
        svc.resolve("default", "nobody")
    assert svc.counts == {}  # refused before any work
