"""Fixtures of the Qwen3 fine-tuning tests (``test_qwen3_*.py``): a tiny random Base model, a handful of clips
encoded by its own codec, and a saved examples file. Other tests in this folder do not need torch: imports are
lazy, and each qwen3 test module skips itself when the qwen extra is missing.

The tiny builder fills the codec encoder's codebooks (``chorus.testing.qwen3_tiny._randomize_codec``), so the
clips get varied codes; ``test_qwen3_samples.py`` checks that they do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

QWEN3_TEXTS = ("hello there", "good day to you", "how are you", "fine thanks")


def qwen3_missing() -> list[str]:
    """The pip names of what the qwen3 fine-tuning tests need and is not installed (torch, transformers,
    qwen-tts, accelerate, peft); test modules skip themselves when it is not empty."""
    import importlib.util

    from chorus.models.qwen3.compat import missing_requirements

    return missing_requirements() + ([] if importlib.util.find_spec("peft") else ["peft"])


def voice(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A wobbling harmonic tone with a little noise, mono float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 120 + 30 * seed + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    audio = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2 + 0.02 * rng.standard_normal(t.size)
    return np.asarray(audio, dtype=np.float32)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from chorus.testing.qwen3_tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("qwen3-finetune-base"), kind="base", seed=3)


@pytest.fixture(scope="session")
def tts(base_dir: Path) -> Any:
    import torch

    from chorus.models.qwen3.compat import load_qwen3

    return load_qwen3(base_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def reference() -> tuple[np.ndarray, int]:
    return voice(1.5, 24_000, seed=9), 24_000


@pytest.fixture(scope="session")
def clips() -> list[tuple[np.ndarray, int, str]]:
    # Mixed rates on purpose: 16 kHz clips are resampled to the codec's 24 kHz.
    rates = [24_000, 16_000, 24_000, 16_000]
    return [(voice(0.4 + 0.1 * i, rates[i], seed=i), rates[i], text) for i, text in enumerate(QWEN3_TEXTS)]


@pytest.fixture(scope="session")
def examples(tts: Any, clips: list[tuple[np.ndarray, int, str]], reference: tuple[np.ndarray, int]) -> list[Any]:
    from chorus.finetune.qwen3_samples import encode_examples

    return encode_examples(tts, clips, reference)


@pytest.fixture(scope="session")
def examples_file(examples: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from chorus.finetune.qwen3_samples import save_examples

    path = tmp_path_factory.mktemp("qwen3-finetune-examples") / "examples.pt"
    save_examples(examples, path)
    return path
