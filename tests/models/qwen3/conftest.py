"""Tiny random-weight Qwen3-TTS models, built and saved by the tests themselves (no hub, no real weights)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the qwen extra is not installed (scripts/install_qwen.sh)")
pytest.importorskip("transformers", reason="the qwen extra is not installed (scripts/install_qwen.sh)")

from chorus.models.qwen3.backend import SAMPLE_RATE, CloneVoice, Qwen3Backend  # noqa: E402
from chorus.testing.qwen3_tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def custom_voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen3-cv"), kind="custom_voice", seed=0)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen3-base"), kind="base", seed=1)


def reference_audio(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A voice-like stand-in: a wobbling harmonic tone with a little noise, 24 kHz mono."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    audio = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2 + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


@pytest.fixture(scope="session")
def custom_voice(custom_voice_dir: Path) -> Iterator[Qwen3Backend]:
    backend = Qwen3Backend(custom_voice_dir, dtype=torch.float64, max_slots=6, max_len=1024, keep_frames=True)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def base(base_dir: Path) -> Iterator[Qwen3Backend]:
    voices = [
        CloneVoice("narrator", reference_audio(seed=0), ref_text="This is the narrator speaking clearly."),
        CloneVoice("xvec", reference_audio(seed=1)),  # no transcript: speaker-embedding-only cloning
    ]
    backend = Qwen3Backend(
        base_dir, dtype=torch.float64, max_slots=6, max_len=1024, keep_frames=True, clone_voices=voices
    )
    yield backend
    backend.close()
