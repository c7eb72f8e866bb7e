"""A fine-tune running beside live traffic, for ``chorus bench-jobs --fine-tune SHAPE``.

The background is a real LoRA training process (``python -m chorus.finetune.qwen3_train``, the trainer the worker
runs) on a random Base model of ``SHAPE`` and a few synthetic clips, at the worker's CPU priority (nice 10) and
thread count (1): what a ``chorus worker --queue finetune`` on the same machine as the server costs live streams.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chorus.finetune.worker import NICE

CLIPS = 6


def prepare(shape: str, root: Path) -> tuple[Path, Path]:
    """A random Base model of ``shape`` and a file of training examples made from synthetic clips."""
    import numpy as np

    from chorus.finetune.qwen3_samples import encode_examples, save_examples
    from chorus.models.qwen3.compat import load_qwen3
    from chorus.testing.qwen3_tiny import build_tiny_model

    model = build_tiny_model(root / "model", kind="base", shape=shape)  # type: ignore[arg-type]
    tts = load_qwen3(model, device="cpu")
    rate = 24_000
    rng = np.random.default_rng(0)
    clips = []
    for i in range(CLIPS):
        t = np.arange(int(rate * (3 + i % 3))) / rate
        audio = (0.2 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        clips.append((audio, rate, f"Training sentence number {i}, said clearly and slowly."))
    examples = root / "examples.pt"
    save_examples(encode_examples(tts, clips, (clips[0][0], rate)), examples)
    return model, examples


class Training:
    """The running trainer: its steps so far (read from its JSON lines)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.steps = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if "loss" in event:
                self.steps = int(event["step"])


@contextmanager
def fine_tune_running(model: Path, examples: Path) -> Iterator[Training]:
    """Train (for as long as the block runs) at the worker's priority; SIGTERM at the end, as a reclaim would."""
    with tempfile.TemporaryDirectory(prefix="chorus-bench-ft-") as blobs:
        command = [
            sys.executable,
            "-m",
            "chorus.finetune.qwen3_train",
            *("--model", str(model), "--examples", str(examples), "--blobs", blobs, "--prefix", "ft"),
            *("--steps", "100000", "--checkpoint-every", "100000", "--num-threads", "1"),
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: os.nice(NICE),
        )
        training = Training(process)
        try:
            yield training
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
