"""LoRA fine-tuning of a Qwen3-TTS Base model (talker + code predictor), preemptible and bit-identical on resume.

The frozen base runs in float32 on the CPU; PEFT adds LoRA to the q/k/v/o and gate/up/down projections of the
talker's and the code predictor's decoder layers. Every step is a pure function of what a checkpoint holds: the
LoRA weights, AdamW's and the scheduler's state, the step, and the RNG streams (LoRA dropout draws from torch's);
the batch of step ``s`` is a pure function of ``(seed, s)`` (a seeded permutation per epoch). So a run stopped by
SIGTERM (checkpoint at the end of the current step) or killed (resume from the last periodic checkpoint) ends
with the same adapter bytes as one that never stopped, provided both use the same number of torch threads:
:class:`TrainConfig.num_threads` (1 by default) is set for the duration of :meth:`LoraTrainer.run`, since a
different thread count changes float summation order. (The adapter file is made byte-canonical too: see
:func:`chorus.models.qwen3.adapter.canonical_safetensors`.)

Entry point for the worker (and the tests)::

    python -m chorus.finetune.qwen3_train --model DIR --examples FILE --blobs URL_OR_DIR --prefix P --steps N \\
        [--out FILE] [--rank 8 --alpha 16 --dropout 0.05 --learning-rate 1e-4 --batch-size 2 --seed 0 ...]

It prints one JSON line per step (``{"step", "loss", ...}``) and a last one with the status, exits 0 when it
finished (adapter written to ``--out``) or was preempted by SIGTERM (checkpoint saved), and non-zero on errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from chorus.finetune.checkpoint import (
    BlobCheckpoints,
    CheckpointError,
    pack_state,
    restore_rng,
    rng_state,
    unpack_state,
)
from chorus.finetune.qwen3_loss import PREDICTOR_WEIGHT, compute_losses
from chorus.finetune.qwen3_samples import SpecialIds, TrainingExample, collate, load_examples

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_NAME = "default"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    steps: int = 1000
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    learning_rate: float = 1e-4
    batch_size: int = 2
    seed: int = 0
    checkpoint_every: int = 100
    predictor_weight: float = PREDICTOR_WEIGHT
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01  # AdamW
    warmup_steps: int | None = None  # linear warm-up, then linear decay to the last step; None: 10 % of steps
    # Projection names inside the decoder layers of the talker and of the code predictor (never text_projection,
    # codec_head, lm_head or small_to_mtp_projection).
    targets: tuple[str, ...] = TARGET_MODULES
    num_threads: int = 1  # torch threads during run(): resume is bit-identical only at the same count

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rank < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, rank, batch_size and checkpoint_every must be at least 1")
        if not 0.0 <= self.dropout < 1.0 or self.learning_rate <= 0 or self.num_threads < 1:
            raise ValueError("dropout must be in [0, 1), learning_rate > 0, num_threads >= 1")
        if not self.targets or not set(self.targets) <= set(TARGET_MODULES):
            raise ValueError(f"targets must be a non-empty subset of {TARGET_MODULES}")

    @property
    def num_warmup_steps(self) -> int:
        return self.steps // 10 if self.warmup_steps is None else min(self.warmup_steps, self.steps)

    def learning_rate_factor(self, step: int) -> float:
        """The scheduler's multiplier at ``step`` (0-based): linear warm-up to 1, then linear decay (> 0 at the
        last step)."""
        warmup = self.num_warmup_steps
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (self.steps - step) / max(1, self.steps - warmup))


@dataclass(frozen=True, slots=True)
class StepEvent:
    step: int  # steps done (1 after the first)
    num_steps: int
    loss: float
    talker_loss: float
    predictor_loss: float
    learning_rate: float  # the rate this step used


@dataclass(frozen=True, slots=True)
class TrainResult:
    status: Literal["succeeded", "preempted"]
    step: int
    losses: tuple[float, ...]  # the total loss of every step so far, resumed runs included
    adapter: bytes | None = None  # chorus adapter bytes when succeeded


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> list[int]:
    """The examples of ``step``: the stream of per-epoch permutations (epoch e seeded by ``(seed, e)``), cut
    into batches; a pure function of its arguments."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, position = divmod(k, num_examples)
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
        out.append(int(order[position]))
    return out


class LoraTrainer:
    """Trains a LoRA adapter for the Base checkpoint at ``model_path`` on ``examples``.

    ``checkpoints`` (None: no checkpoints, no resume) is where :meth:`run` saves every ``checkpoint_every`` steps
    and on preemption, and what it resumes from when it holds a checkpoint of the same run.
    """

    def __init__(
        self,
        model_path: Path,
        config: TrainConfig,
        examples: Sequence[TrainingExample],
        checkpoints: BlobCheckpoints | None = None,
    ) -> None:
        import peft

        from chorus.models.qwen3.compat import load_qwen3
        from chorus.models.qwen3.voice_prompt import checkpoint_digest

        if not examples:
            raise ValueError("no training examples")
        self.model_path = Path(model_path)
        self.config = config
        self.examples = list(examples)
        self.checkpoints = checkpoints
        self.base_digest = checkpoint_digest(self.model_path)
        tts = load_qwen3(self.model_path, device="cpu", dtype=torch.float32)
        self.ids = SpecialIds.from_config(tts.model.config)
        self.talker: Any = tts.model.talker  # the codec and the speaker encoder are not needed to train
        self.talker.requires_grad_(False)
        names = "|".join(config.targets)
        settings: dict[str, Any] = {"r": config.rank, "lora_alpha": config.alpha, "lora_dropout": config.dropout}
        lora = peft.LoraConfig(
            **settings,
            bias="none",
            target_modules=rf"(model|code_predictor\.model)\.layers\.\d+\.(self_attn|mlp)\.({names})",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # LoRA A's initialisation
            self.peft_model: Any = peft.get_peft_model(self.talker, lora)
        self.params = [p for _, p in self.talker.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, config.learning_rate_factor)
        self.step = 0
        self.losses: list[float] = []
        self._identity = self._run_identity()

    # -- training -------------------------------------------------------------------------------------

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, on_step: Callable[[StepEvent], None] | None = None
    ) -> TrainResult:
        """Train to ``config.steps`` (resuming from the newest checkpoint, if any). When ``should_stop()`` turns
        true, the current step finishes, a checkpoint is saved and the result is "preempted"."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            if not self._resume():
                _seed_all(self.config.seed)
            saved = self.step
            while self.step < self.config.steps:
                if should_stop():
                    if saved != self.step:
                        self._save()
                    return TrainResult("preempted", self.step, tuple(self.losses))
                event = self._train_step()
                if on_step is not None:
                    on_step(event)
                if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                    self._save()
                    saved = self.step
            return TrainResult("succeeded", self.step, tuple(self.losses), self.export_adapter())
        finally:
            torch.set_num_threads(threads)

    def _train_step(self) -> StepEvent:
        config = self.config
        picked = batch_indices(config.seed, self.step, len(self.examples), config.batch_size)
        batch = collate([self.examples[i] for i in picked], self.ids)
        rate = self.optimizer.param_groups[0]["lr"]
        self.talker.train()
        losses = compute_losses(self.talker, batch, predictor_weight=config.predictor_weight)
        torch.autograd.backward([losses.total])
        torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = float(losses.total.detach())
        self.losses.append(loss)
        return StepEvent(
            step=self.step,
            num_steps=config.steps,
            loss=loss,
            talker_loss=float(losses.talker.detach()),
            predictor_loss=float(losses.predictor.detach()),
            learning_rate=float(rate),
        )

    # -- checkpoints ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the next step depends on (the RNG state last, as it is restored last)."""
        return {
            "run": self._identity,
            "step": self.step,
            "seed": self.config.seed,
            "losses": list(self.losses),
            "lora": {name: p.detach().clone() for name, p in self.talker.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("run") != self._identity:
            raise CheckpointError("the checkpoint belongs to another run (model, examples or settings differ)")
        trainable = {n: p for n, p in self.talker.named_parameters() if p.requires_grad}
        if set(state["lora"]) != set(trainable):
            raise CheckpointError("the checkpoint's LoRA parameters do not match this model's")
        with torch.no_grad():
            for name, value in state["lora"].items():
                trainable[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.losses = [float(x) for x in state["losses"]]
        restore_rng(state["rng"])  # last: nothing above may draw from it

    def _save(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(pack_state(self.state()), step=self.step)

    def _resume(self) -> bool:
        data = None if self.checkpoints is None else self.checkpoints.load()
        if data is None:
            return False
        self.load_state(unpack_state(data))
        return True

    def _run_identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this trainer."""
        settings = asdict(self.config)
        settings.pop("num_threads")  # (the caller's business; must match, but it is not state)
        settings["targets"] = list(self.config.targets)
        return {
            "base": self.base_digest,
            "config": json.dumps(settings, sort_keys=True),
            "examples": examples_digest(self.examples),
        }

    # -- output ---------------------------------------------------------------------------------------

    def export_adapter(self) -> bytes:
        """The adapter file (``chorus.models.qwen3.adapter``): A and B of every adapted Linear, unscaled."""
        from peft.tuners.lora import LoraLayer

        from chorus.models.qwen3.adapter import save_adapter

        weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, module in self.talker.named_modules():
            if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
                layer: Any = module
                weights[f"talker.{name}"] = (layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight)
        return save_adapter(weights, rank=self.config.rank, alpha=self.config.alpha, base=self.base_digest)


def examples_digest(examples: Sequence[TrainingExample]) -> str:
    h = hashlib.sha256()
    for e in examples:
        for t in (e.text_ids, e.codes, e.speaker):
            h.update(repr((t.dtype, tuple(t.shape))).encode() + t.contiguous().numpy().tobytes())
        h.update(repr(e.language_id).encode())
    return h.hexdigest()


def _seed_all(seed: int) -> None:
    import random

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# -- command line -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m chorus.finetune.qwen3_train", description="LoRA fine-tuning of a Qwen3-TTS Base model"
    )
    p.add_argument("--model", type=Path, required=True, help="the Base checkpoint folder")
    p.add_argument("--examples", type=Path, required=True, help="file written by qwen3_samples.save_examples")
    p.add_argument("--blobs", required=True, help="blob store root (folder, file:// or s3:// URL)")
    p.add_argument("--prefix", required=True, help="checkpoint key prefix in the blob store")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", type=Path, help="where to write the adapter when training finishes")
    for name in ("rank", "batch_size", "seed", "checkpoint_every", "num_threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("alpha", "dropout", "learning_rate", "predictor_weight", "max_grad_norm", "weight_decay"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument("--warmup-steps", type=int, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from chorus.store.blobs import open_blob_store

    args = parse_args(argv)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        config = TrainConfig(
            steps=args.steps,
            rank=args.rank,
            alpha=args.alpha,
            dropout=args.dropout,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            predictor_weight=args.predictor_weight,
            max_grad_norm=args.max_grad_norm,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            num_threads=args.num_threads,
        )
        checkpoints = BlobCheckpoints(open_blob_store(args.blobs), args.prefix)
        trainer = LoraTrainer(args.model, config, load_examples(args.examples), checkpoints)

        def report(event: StepEvent) -> None:
            print(json.dumps(asdict(event)), flush=True)

        result = trainer.run(should_stop=stop.is_set, on_step=report)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.adapter is not None and args.out is not None:
        _write_atomic(args.out, result.adapter)
    print(json.dumps({"status": result.status, "step": result.step}), flush=True)
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
