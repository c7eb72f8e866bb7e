"""Every output the speech service hands out is watermarked (chorus.watermark.marking): the marked stream is the
backend's audio marked as one clip, whichever door (thread or event loop) and however the engine cut it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from chorus.speech import SpeechOrder
from chorus.watermark import Watermarker, detect
from chorus.watermark.marking import Marking, configured_key, key_from_file, tenant_payload
from tests.engine.helpers import make_engine, speech_service
from tests.fakes import FakeBackend, expected_audio

KEY = b"k" * 32
RATE = 16_000
TEXT = " ".join(f"w{i}" for i in range(120))  # 120 frames of 100 samples: 0.75 s at 16 kHz


def test_both_doors_hand_out_the_backends_audio_marked_as_one_clip() -> None:
    backend = FakeBackend(sample_rate=RATE)
    client, speech = speech_service(make_engine(backend), marking=Marking(KEY))
    client.start()
    try:
        outputs = list(speech.stream(SpeechOrder(TEXT, tenant_id="acme")))

        async def from_the_loop() -> list[np.ndarray]:
            stream = await speech.open(SpeechOrder(TEXT, tenant_id="acme"))
            assert stream.receipt.watermark == {"payload": tenant_payload("acme"), "key_id": Marking(KEY).key_id}
            return [out.audio async for out in stream]

        looped = asyncio.run(asyncio.wait_for(from_the_loop(), timeout=10))
    finally:
        client.close()
    expected = Watermarker(KEY, RATE).mark(expected_audio(TEXT), tenant_payload("acme"))
    threaded = np.concatenate([out.audio for out in outputs])
    np.testing.assert_array_equal(threaded, expected)
    np.testing.assert_array_equal(np.concatenate(looped), expected)
    assert len(outputs) > 3 and outputs[-1].is_finished  # streamed in pieces, the held-back tail last
    assert not np.array_equal(threaded, expected_audio(TEXT))


def test_a_rate_the_mark_cannot_take_is_refused_when_the_service_is_built() -> None:
    with pytest.raises(ValueError, match="multiple of 50 Hz"):
        speech_service(make_engine(FakeBackend(sample_rate=1000)), marking=Marking(KEY))


def test_keys_from_config_or_a_file_made_once(tmp_path: Path) -> None:
    assert configured_key(None) is None and configured_key("  ") is None
    assert configured_key("00ff") == b"\x00\xff" and configured_key("my passphrase") == b"my passphrase"
    first = key_from_file(tmp_path)
    assert len(first) == 32 and key_from_file(tmp_path) == first
    assert oct((tmp_path / "watermark.key").stat().st_mode & 0o777) == "0o600"


def test_payloads_name_tenants_and_marks_are_found() -> None:
    assert tenant_payload("acme") != tenant_payload("globex") and 0 <= tenant_payload("acme") < 2**16
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(RATE * 6)).astype(np.float32)
    marked = Watermarker(KEY, RATE).mark(noise, tenant_payload("acme"))
    found = Marking(KEY).detect(marked, RATE)
    assert found.watermarked and found.payload == tenant_payload("acme")
    assert not detect(noise, RATE, KEY).watermarked
