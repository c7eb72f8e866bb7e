"""LoRA training: the loss falls; the adapter file is PEFT's merge; a run stopped by SIGTERM, killed by SIGKILL or
crashed mid-checkpoint and then resumed ends with the same adapter bytes as one that never stopped."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.finetune.conftest import qwen3_missing

if missing := qwen3_missing():
    pytest.skip(f"not installed: {', '.join(missing)} (the qwen extra)", allow_module_level=True)

import torch

from chorus.finetune.checkpoint import BlobCheckpoints, CheckpointError, unpack_state
from chorus.finetune.qwen3_samples import TrainingExample
from chorus.finetune.qwen3_train import LoraTrainer, StepEvent, TrainConfig, TrainResult, batch_indices, main
from chorus.models.qwen3.adapter import load_adapter
from chorus.models.qwen3.voice_prompt import checkpoint_digest
from chorus.store.blobs import LocalBlobStore
from tests.finetune.test_qwen3_checkpoint import CrashingStore

REPO = Path(__file__).resolve().parents[2]
# Dropout on, a warm-up, two epochs over the four examples: every piece of state a resume must restore matters.
CONFIG = TrainConfig(steps=8, checkpoint_every=3, learning_rate=1e-2, warmup_steps=2, seed=7)
CLI = ["--steps", "8", "--checkpoint-every", "3", "--learning-rate", "0.01", "--warmup-steps", "2", "--seed", "7"]


@dataclass
class Child:
    proc: subprocess.Popen[str]
    store: LocalBlobStore
    prefix: str
    stderr: Path

    def wait_paused(self) -> list[str]:
        """Stdout lines up to the child's "paused" (it reported that step and waits to be signalled)."""
        assert self.proc.stdout is not None
        lines: list[str] = []
        for line in self.proc.stdout:
            if line.strip() == "paused":
                return lines
            lines.append(line.strip())
        self.proc.wait(timeout=10)
        raise AssertionError(f"child exited {self.proc.returncode} before pausing: {self.stderr.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def uninterrupted(base_dir: Path, examples: list[TrainingExample], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An uninterrupted run (with periodic checkpoints, like the others) and its trainer."""
    store = LocalBlobStore(tmp_path_factory.mktemp("uninterrupted-blobs"))
    trainer = LoraTrainer(base_dir, CONFIG, examples, BlobCheckpoints(store, "ref"))
    result = trainer.run()
    assert result.status == "succeeded" and result.adapter is not None and len(result.losses) == CONFIG.steps
    return trainer, result


@pytest.fixture(scope="module", autouse=True)
def children(
    base_dir: Path, examples_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Child]]:
    """Two child trainers, started with the module's first test so that their imports (which dominate) overlap
    the in-process tests: "term" pauses after step 4 for SIGTERM, "kill" after step 5 (last periodic
    checkpoint: step 3) for SIGKILL."""
    started: dict[str, Child] = {}
    for name, pause_at in (("term", 4), ("kill", 5)):
        root = tmp_path_factory.mktemp(f"{name}-blobs")
        stderr = root.parent / f"{name}.stderr"
        env = {**os.environ, "CHORUS_TEST_PAUSE_AT": str(pause_at), "PYTHONPATH": str(REPO)}
        args = ["--model", str(base_dir), "--examples", str(examples_file), "--blobs", str(root), "--prefix", name]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.finetune.train_child", *args, *CLI],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr.open("w"),
            text=True,
        )
        started[name] = Child(proc, LocalBlobStore(root), name, stderr)
    yield started
    for child in started.values():
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()
        if child.proc.stdout is not None:
            child.proc.stdout.close()


def resume(
    base_dir: Path, examples: list[TrainingExample], store: Any, prefix: str
) -> tuple[TrainResult, list[StepEvent]]:
    events: list[StepEvent] = []
    result = LoraTrainer(base_dir, CONFIG, examples, BlobCheckpoints(store, prefix)).run(on_step=events.append)
    return result, events


def checkpoint_step(store: Any, prefix: str) -> int:
    data = BlobCheckpoints(store, prefix).load()
    assert data is not None
    return int(unpack_state(data)["step"])


def test_batches_are_a_pure_function_of_seed_and_step() -> None:
    stream = [i for s in range(6) for i in batch_indices(7, s, 4, 2)]  # three epochs of four examples
    for epoch in range(3):
        assert sorted(stream[4 * epoch : 4 * epoch + 4]) == [0, 1, 2, 3]
    assert stream[:4] != stream[4:8] or stream[4:8] != stream[8:12]
    assert batch_indices(7, 5, 4, 2) == stream[10:12]
    assert [i for s in range(6) for i in batch_indices(8, s, 4, 2)] != stream


def test_loss_falls(base_dir: Path, examples: list[TrainingExample]) -> None:
    """A random talker starts near the uniform loss, ln 3072 + 0.3 ln 2048 ≈ 10.3 nats, and moves ±0.05 nats from
    batch to batch; 30 steps of LoRA on four clips must take more than 0.5 nats off (measured: about 0.9)."""
    config = TrainConfig(steps=30, learning_rate=1e-2, seed=1)
    events: list[StepEvent] = []
    result = LoraTrainer(base_dir, config, examples).run(on_step=events.append)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert 9.8 < first < 10.6
    assert last < first - 0.5, result.losses
    assert np.mean([e.talker_loss for e in events[-5:]]) < np.mean([e.talker_loss for e in events[:5]]) - 0.4
    assert np.mean([e.predictor_loss for e in events[-5:]]) < np.mean([e.predictor_loss for e in events[:5]])
    assert [e.step for e in events] == list(range(1, 31))


def test_crash_between_checkpoint_and_pointer_resumes_from_the_previous(
    base_dir: Path, examples: list[TrainingExample], uninterrupted: Any, tmp_path: Path
) -> None:
    _, expected = uninterrupted
    crashing = CrashingStore(tmp_path, crash_at=2)  # the step-6 checkpoint is written, its pointer is not
    with pytest.raises(KeyboardInterrupt):
        LoraTrainer(base_dir, CONFIG, examples, BlobCheckpoints(crashing, "run")).run()
    store = LocalBlobStore(tmp_path)
    assert store.exists("run/ckpt-00000006.pt") and checkpoint_step(store, "run") == 3
    result, events = resume(base_dir, examples, store, "run")
    assert events[0].step == 4 and result.adapter == expected.adapter


def test_periodic_checkpoints_keep_the_newest_two(uninterrupted: Any) -> None:
    trainer, _ = uninterrupted
    root = trainer.checkpoints.blobs.root / "ref"
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-00000003.pt", "ckpt-00000006.pt", "latest"]


def test_a_checkpoint_of_another_run_is_refused(
    base_dir: Path, examples: list[TrainingExample], uninterrupted: Any
) -> None:
    trainer, _ = uninterrupted
    other = TrainConfig(steps=8, checkpoint_every=3, learning_rate=2e-2, warmup_steps=2, seed=7)
    with pytest.raises(CheckpointError, match="another run"):
        LoraTrainer(base_dir, other, examples, trainer.checkpoints).run()


def test_sigterm_then_resume_gives_the_same_adapter(
    base_dir: Path, examples: list[TrainingExample], examples_file: Path, children: dict[str, Child], uninterrupted: Any
) -> None:
    _, expected = uninterrupted
    child = children["term"]
    reported = [json.loads(line) for line in child.wait_paused()]
    assert [r["step"] for r in reported] == [1, 2, 3, 4]
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(timeout=60) == 0, child.stderr.read_text()[-3000:]
    assert child.proc.stdout is not None
    assert json.loads(child.proc.stdout.read().splitlines()[-1]) == {"status": "preempted", "step": 4}
    assert checkpoint_step(child.store, child.prefix) == 4
    assert [r["loss"] for r in reported] == list(expected.losses[:4])
    # The worker's second attempt: the same command line, in this process this time, with --out.
    out = child.stderr.parent / "adapter.safetensors"
    args = ["--model", str(base_dir), "--examples", str(examples_file), "--blobs", str(child.store.root)]
    assert main([*args, "--prefix", child.prefix, "--out", str(out), *CLI]) == 0
    assert out.read_bytes() == expected.adapter


def test_sigkill_then_resume_from_the_last_periodic_checkpoint(
    base_dir: Path, examples: list[TrainingExample], children: dict[str, Child], uninterrupted: Any
) -> None:
    _, expected = uninterrupted
    child = children["kill"]
    child.wait_paused()
    child.proc.kill()
    assert child.proc.wait(timeout=60) == -signal.SIGKILL
    assert checkpoint_step(child.store, child.prefix) == 3
    result, events = resume(base_dir, examples, child.store, child.prefix)
    assert [e.step for e in events] == [4, 5, 6, 7, 8]
    assert result.losses == expected.losses
    assert result.adapter == expected.adapter


def test_adapter_file_is_peft_merged_minus_base(base_dir: Path, uninterrupted: Any) -> None:
    """What serving adds to each Linear (alpha/rank · B A from the file) is what PEFT's merge adds; only the
    decoder layers' projections are adapted."""
    trainer, result = uninterrupted
    adapter = load_adapter(result.adapter, base=checkpoint_digest(base_dir))
    talker_layers = len(trainer.talker.model.layers)
    predictor_layers = len(trainer.talker.code_predictor.model.layers)
    assert len(adapter.weights) == 7 * (talker_layers + predictor_layers)
    assert all(p.startswith(("talker.model.layers.", "talker.code_predictor.model.layers.")) for p in adapter.weights)
    assert adapter.rank == CONFIG.rank and adapter.alpha == CONFIG.alpha
    base = {
        p: trainer.talker.get_submodule(p.removeprefix("talker.")).base_layer.weight.clone() for p in adapter.weights
    }
    merged = copy.deepcopy(trainer.peft_model).merge_and_unload()  # (merging changes the model it is given)
    for path, before in base.items():
        module = merged.get_submodule(path.removeprefix("talker."))
        assert type(module) is torch.nn.Linear
        delta = module.weight.detach() - before
        assert delta.abs().max() > 0
        torch.testing.assert_close(delta, adapter.delta(path), rtol=0, atol=1e-6)
