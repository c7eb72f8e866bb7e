"""Speaker embeddings on real (espeak-ng) speech, and the embedding cache under concurrency."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from chorus.audio.resample import resample
from chorus.voices.embedding import EMBEDDING_DIM, EmbeddingCache, SpeakerEncoder
from tests.voices.speech import OTHER_SENTENCE, SENTENCE, require_espeak, speak


@pytest.fixture(scope="module")
def encoder() -> Iterator[SpeakerEncoder]:
    require_espeak()
    encoder = SpeakerEncoder()
    encoder.warm_up()
    yield encoder


def embed(encoder: SpeakerEncoder, text: str, voice: str = "en-us") -> np.ndarray:
    return encoder.embed(*speak(text, voice))


def test_same_voice_is_closer_than_another_voice(encoder: SpeakerEncoder) -> None:
    male_1, male_2 = embed(encoder, SENTENCE), embed(encoder, OTHER_SENTENCE)
    female_1, female_2 = embed(encoder, SENTENCE, "en-us+f3"), embed(encoder, OTHER_SENTENCE, "en-us+f3")
    same_voice = [encoder.similarity(male_1, male_2), encoder.similarity(female_1, female_2)]
    # Across voices, with the same words and with different words: the words must not be what matches.
    other_voice = [
        encoder.similarity(male_1, female_1),
        encoder.similarity(male_1, female_2),
        encoder.similarity(male_2, female_1),
    ]
    assert min(same_voice) > max(other_voice) + 0.1, (same_voice, other_voice)


def test_embedding_is_unit_length_and_deterministic(encoder: SpeakerEncoder) -> None:
    speech, rate = speak(SENTENCE)
    first, second = encoder.embed(speech, rate), encoder.embed(speech.copy(), rate)
    assert first.shape == (EMBEDDING_DIM,) and first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(first, second)
    assert encoder.similarity(first, second) == pytest.approx(1.0, abs=1e-6)


def test_input_rate_barely_matters(encoder: SpeakerEncoder) -> None:
    speech, rate = speak(SENTENCE)
    at_24k = encoder.embed(resample(speech, rate, 24_000), 24_000)
    assert encoder.similarity(encoder.embed(speech, rate), at_24k) > 0.99


def test_unusable_audio_is_refused(encoder: SpeakerEncoder) -> None:
    with pytest.raises(ValueError, match="silent"):
        encoder.embed(np.zeros(16_000, np.float32), 16_000)
    with pytest.raises(ValueError, match="1-D"):
        encoder.embed(np.zeros((2, 16_000), np.float32), 16_000)
    with pytest.raises(ValueError, match="NaN"):
        encoder.embed(np.full(16_000, np.nan, np.float32), 16_000)


def test_bytes_round_trip() -> None:
    embedding = np.random.default_rng(0).random(EMBEDDING_DIM).astype(np.float32)
    data = SpeakerEncoder.to_bytes(embedding)
    back = SpeakerEncoder.from_bytes(data)
    np.testing.assert_array_equal(back, embedding)
    assert back.dtype == np.float32
    with pytest.raises(ValueError):
        SpeakerEncoder.from_bytes(SpeakerEncoder.to_bytes(np.zeros(10, np.float32)))
    with pytest.raises(ValueError):
        SpeakerEncoder.from_bytes(b"not an array")


def test_similarity_is_cosine() -> None:
    assert SpeakerEncoder.similarity(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert SpeakerEncoder.similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(2**-0.5)
    with pytest.raises(ValueError):
        SpeakerEncoder.similarity(np.zeros(2), np.ones(2))


def test_importing_the_voice_modules_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, chorus.voices.embedding, chorus.voices.preprocess; "
        "print(sorted(m for m in ('torch', 'resemblyzer', 'librosa', 'pyloudnorm', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(EMBEDDING_DIM).astype(np.float32)


def test_cache_computes_once_per_voice_under_concurrency() -> None:
    cache = EmbeddingCache(maxsize=8)
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def loader_for(voice_id: str) -> Any:
        def load() -> np.ndarray:
            with lock:
                calls[voice_id] = calls.get(voice_id, 0) + 1
            time.sleep(0.05)  # long enough for every thread to ask while it runs
            return vector(int(voice_id[-1]))

        return load

    voice_ids = [f"voice-{i % 3}" for i in range(24)]
    start = threading.Barrier(len(voice_ids))
    results: list[tuple[str, np.ndarray]] = []

    def worker(voice_id: str) -> None:
        start.wait()
        value = cache.get_or_compute(voice_id, loader_for(voice_id))
        with lock:
            results.append((voice_id, value))

    threads = [threading.Thread(target=worker, args=(v,)) for v in voice_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.computations == 3 and calls == {"voice-0": 1, "voice-1": 1, "voice-2": 1}
    assert len(results) == len(voice_ids)
    for voice_id, value in results:
        assert value is cache.get_or_compute(voice_id, loader_for(voice_id))  # one shared, read-only array
        assert not value.flags.writeable
    assert cache.computations == 3


def test_cache_evicts_least_recently_used() -> None:
    cache = EmbeddingCache(maxsize=2)
    cache.get_or_compute("a", lambda: vector(1))
    cache.get_or_compute("b", lambda: vector(2))
    cache.get_or_compute("a", lambda: vector(1))  # a is now the most recent
    cache.get_or_compute("c", lambda: vector(3))  # evicts b
    assert len(cache) == 2 and cache.computations == 3
    cache.get_or_compute("a", lambda: vector(1))
    assert cache.computations == 3
    cache.get_or_compute("b", lambda: vector(2))
    assert cache.computations == 4


def test_cache_loader_error_reaches_every_waiter_and_is_not_cached() -> None:
    cache = EmbeddingCache()
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def failing() -> np.ndarray:
        entered.set()
        release.wait(5)
        raise RuntimeError("broken upload")

    def worker() -> None:
        try:
            cache.get_or_compute("v", failing)
        except RuntimeError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    threads[0].start()
    assert entered.wait(5)
    for t in threads[1:]:
        t.start()
    time.sleep(0.2)  # the others are now waiting on the first one's computation
    release.set()
    for t in threads:
        t.join()
    assert len(errors) == 4 and cache.computations == 1
    np.testing.assert_array_equal(cache.get_or_compute("v", lambda: vector(0)), vector(0))
    assert cache.computations == 2


def test_cache_invalidate_forgets_a_voice() -> None:
    cache = EmbeddingCache()
    cache.get_or_compute("v", lambda: vector(0))
    cache.invalidate("v")
    np.testing.assert_array_equal(cache.get_or_compute("v", lambda: vector(1)), vector(1))
    assert cache.computations == 2
