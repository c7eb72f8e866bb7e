"""One Qwen3 fine-tune, from a dataset's clips to a servable voice model and its training report.

The clips are split: a reference clip (the voice's x-vector prompt, as a zero-shot registration would take it),
a few held-out clips (never trained on: the report's similarity is measured against them) and the rest, which
train the adapter (``qwen3_train.LoraTrainer``, checkpointed to the blob store, preemptible). The voice model is
the serving backend's own envelope (``Qwen3Backend.build_lora_voice``: the x-vector prompt of the reference clip
and the adapter). The report holds the loss curve and, for each held-out clip, the speaker similarity (GE2E) of
the fine-tuned voice saying its text, and of the zero-shot voice of the same reference clip saying it: the gain
is what fine-tuning bought over cloning from one clip.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chorus.finetune.checkpoint import BlobCheckpoints
from chorus.finetune.dataset_service import TrainingClip
from chorus.finetune.jobs import TrainOutcome
from chorus.finetune.piper_voice import pick_reference
from chorus.models.base import ReferenceVoice, SpeechInput, SynthesisParams
from chorus.store.blobs import BlobStore
from chorus.voices.embedding import SpeakerEncoder

HELD_OUT = 2  # clips kept out of training for the similarity report (when the dataset has enough)
SAMPLE_SEED = 1234


@dataclass(frozen=True)
class Split:
    reference: TrainingClip
    held_out: list[TrainingClip]
    train: list[TrainingClip]


def split_clips(clips: Sequence[TrainingClip], held_out: int = HELD_OUT) -> Split:
    """Deterministic: the reference clip, then held-out clips spread evenly over the rest (none below 4 clips)."""
    if not clips:
        raise ValueError("the dataset has no clips")
    reference = clips[pick_reference(clips)[0]]  # the clip a user would register (Piper's job picks the same)
    rest = [c for c in clips if c is not reference]
    n = held_out if len(rest) >= 2 * held_out + 2 else 0
    picked = {round((i + 0.5) * len(rest) / n) for i in range(n)} if n else set()
    return Split(
        reference,
        [c for i, c in enumerate(rest) if i in picked],
        [c for i, c in enumerate(rest) if i not in picked] or [reference],
    )


def train_qwen3(
    backend: Any,
    model_path: Path,
    clips: Sequence[TrainingClip],
    params: dict[str, Any],
    *,
    blobs: BlobStore,
    checkpoint_prefix: str,
    checkpoint_every: int,
    should_stop: Callable[[], bool],
    on_step: Callable[[dict[str, Any]], None],
    encoder: SpeakerEncoder,
) -> TrainOutcome:
    from chorus.finetune.qwen3_samples import encode_examples
    from chorus.finetune.qwen3_train import LoraTrainer, TrainConfig

    split = split_clips(clips)
    ref = split.reference
    language = str(params.get("language") or "auto")
    examples = encode_examples(
        backend.tts,
        [(c.audio, c.sample_rate, c.text) for c in split.train],
        (ref.audio, ref.sample_rate),
        language=language,
    )
    config = TrainConfig(
        rank=int(params["rank"]),
        alpha=float(params["alpha"]),
        dropout=float(params["dropout"]),
        targets=tuple(params["targets"]),
        steps=int(params["steps"]),
        learning_rate=float(params["learning_rate"]),
        batch_size=int(params["batch_size"]),
        seed=int(params["seed"]),
        checkpoint_every=checkpoint_every,
    )
    trainer = LoraTrainer(model_path, config, examples, checkpoints=BlobCheckpoints(blobs, checkpoint_prefix))
    times: list[float] = []
    last = [time.monotonic()]

    def step_done(event: Any) -> None:
        now = time.monotonic()
        times.append(now - last[0])
        last[0] = now
        recent = statistics.median(times[-20:])
        on_step(
            {
                "step": event.step,
                "steps": event.num_steps,
                "loss": round(event.loss, 5),
                "talker_loss": round(event.talker_loss, 5),
                "predictor_loss": round(event.predictor_loss, 5),
                "learning_rate": event.learning_rate,
                "eta_s": round(recent * (event.num_steps - event.step), 1),
            }
        )

    result = trainer.run(should_stop=should_stop, on_step=step_done)
    if result.status != "succeeded" or result.adapter is None:
        return TrainOutcome(result.status, result.step)
    voice = ReferenceVoice("fine-tuned", ref.audio, ref.sample_rate, None, language)
    model = backend.build_lora_voice(voice, result.adapter)
    report = {
        "losses": [round(x, 5) for x in result.losses],
        "train_clips": len(split.train),
        "reference_clip": ref.file_name,
        "adapter_bytes": len(result.adapter),
        "similarity": held_out_similarity(backend, model, voice, split.held_out, encoder),
    }
    return TrainOutcome("succeeded", result.step, model, report, ref)


def loss_curve_png(losses: Sequence[float], title: str) -> bytes | None:
    """The loss per step as a PNG (None without matplotlib, which the qwen extra installs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, color="tab:blue", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (codebook 0 + 0.3 x code predictor)")
    ax.set_title(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def held_out_similarity(
    backend: Any, model: bytes, voice: ReferenceVoice, held_out: Sequence[TrainingClip], encoder: SpeakerEncoder
) -> dict[str, Any]:
    """Each held-out clip's text said by the fine-tuned voice and by the zero-shot voice of the same reference clip
    (seeded sampling, the serving defaults), each compared (GE2E cosine) with the real clip."""
    if not held_out:
        return {"held_out_clips": 0, "note": "too few clips to hold any out"}
    backend.load_voice("eval-fine-tuned", model)
    backend.load_voice("eval-zero-shot", backend.build_voice(voice))
    names = ("fine-tuned", "zero-shot")
    requests = [(f"eval-{name}", clip.text) for clip in held_out for name in names]
    longest = max(len(c.audio) / c.sample_rate for c in held_out)
    frames = int(1.5 * longest / backend.frame_seconds) + 10
    batch = max(1, backend.max_slots)
    try:  # every held-out sentence in both voices, in batches (as the engine would run them)
        audio = [
            said
            for start in range(0, len(requests), batch)
            for said in speak(backend, requests[start : start + batch], voice.language, max_frames=frames)
        ]
    finally:
        backend.unload_voice("eval-fine-tuned")
        backend.unload_voice("eval-zero-shot")
    rows = []
    for i, clip in enumerate(held_out):
        real = encoder.embed(clip.audio, clip.sample_rate)
        row: dict[str, Any] = {"clip": clip.file_name}
        for j, name in enumerate(names):
            said = encoder.embed(audio[i * len(names) + j], backend.sample_rate)
            row[name] = round(SpeakerEncoder.similarity(said, real), 4)
        rows.append(row)
    tuned = float(np.mean([r["fine-tuned"] for r in rows]))
    zero = float(np.mean([r["zero-shot"] for r in rows]))
    return {
        "held_out_clips": len(rows),
        "fine_tuned": round(tuned, 4),
        "zero_shot": round(zero, 4),
        "gain": round(tuned - zero, 4),
        "clips": rows,
        "method": "GE2E cosine of each held-out clip's text said by each voice (seeded sampling) vs the real clip",
    }


def speak(backend: Any, requests: Sequence[tuple[str, str]], language: str, *, max_frames: int) -> list[np.ndarray]:
    """(voice, text) requests stepped together through the backend's own loop (no engine), at most ``max_frames``
    each: the whole audio of each."""
    params = SynthesisParams(language=None if language == "auto" else language, seed=SAMPLE_SEED)
    inputs = [SpeechInput(f"eval-{i}", text, voice, params) for i, (voice, text) in enumerate(requests)]
    slots = backend.prefill([(inp, backend.preprocess(inp)) for inp in inputs])
    chunks: list[list[np.ndarray]] = [[] for _ in slots]
    try:
        for _ in range(max_frames):
            running = [i for i, slot in enumerate(slots) if not slot.is_finished]
            if not running:
                break
            for i, out in zip(running, backend.step([slots[i] for i in running]), strict=True):
                chunks[i].append(out.audio)
        for i, slot in enumerate(slots):
            chunks[i].append(backend.flush(slot))
    finally:
        for slot in slots:
            backend.release(slot)
    return [np.concatenate(c) for c in chunks]
