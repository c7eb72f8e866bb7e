"""Fine-tuning on the CPU default (Piper): the per-voice conversion fitted on a whole dataset, and what it gains.

A cloned Piper voice is Piper's speech converted towards the speaker (``chorus.models.cloning.conversion``),
normally fitted on the one reference clip the user registered. With a dataset (minutes of the speaker with exact
transcripts) the same conversion is fitted on every clip (``chorus.models.cloning.conversion_dataset``), and the
result is packed exactly as ``PiperBackend.build_voice`` packs a registration's, so ``load_voice`` serves it
unchanged.

The gain is measured, not assumed, on clips that neither fit sees:

* ``holdout`` clips, spread over the dataset (one drawn at random, seeded, from each of ``holdout`` equal strata
  of the clips), are set aside;
* the one-clip baseline is fitted exactly as a zero-shot registration fits it: the clip a user would register
  (``pick_reference``: the longest clip of at most 15 s) goes through the upload preprocessing
  (``preprocess_reference``) and ``PiperBackend.build_voice`` with its transcript;
* for each held-out clip, Piper renders its transcript and both models convert it (whole clip); the GE2E speaker
  embedding (``SpeakerEncoder``) of each result is compared (cosine) with that of the real held-out clip of the
  same words, and with the normalised mean embedding of all held-out real clips. The report gives each clip,
  the means, and the gain: mean(dataset) - mean(one-clip). Unconverted Piper is reported beside them as the
  floor.

Measured (by hand: target speakers of ``chorus bench-voices``, 3.1-3.7 min of speech each in 31 clips of two of 61
sentences (``chorus.bench.corpus``, ``tests/voices/speech.py``), 6 held out, seed 0; the one-clip reference is a
9-12 s clip): the dataset voice is about as similar as the one-clip voice, and easier to understand. Similarity
one-clip -> dataset: development speakers (on which ``conversion_dataset.GMM_REG`` was chosen) kal 0.862 -> 0.884,
slt HTS 0.842 -> 0.872, ked 0.880 -> 0.887; test speakers awb 0.876 -> 0.876, rms 0.862 -> 0.869, lp 0.813 ->
0.811. Word accuracy of pocketsphinx on the held-out conversions (test speakers): awb 0.58 -> 0.65, rms 0.57 ->
0.65, lp 0.11 -> 0.43 (Piper 0.81). With one-sentence clips (a 5-6.5 s reference; measured with the one-clip fit's
floor 0.3) the similarity gain was +0.02 to +0.065 (awb, kal, slt HTS, rms, lp; one-clip 0.71-0.82): the dataset
mostly makes up for a short reference.

A stop request (``should_stop``) is checked between clips and raises :class:`PiperTrainingStopped`; nothing is
kept: the fit takes about a minute for 3-4 minutes of speech (one core), so a restarted job simply starts again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus.finetune.dataset_service import TrainingClip
from chorus.models.base import ReferenceVoice
from chorus.models.cloning import voice_model
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.preprocess import InvalidReferenceError, preprocess_reference, wav_bytes

if TYPE_CHECKING:
    from chorus.models.cloning.conversion import ConversionModel
    from chorus.models.piper import PiperBackend

DEFAULT_HOLDOUT = 6
REFERENCE_MAX_S = 15.0  # the longest clip up to this long is what a user would register
MIN_HELD_OUT_S = 2.0  # shorter held-out clips give noisy embeddings (the encoder averages 1.6 s windows)
ROUND = 4

__all__ = ["DEFAULT_HOLDOUT", "PiperTrainingStopped", "PiperVoiceResult", "pick_reference", "train_piper_voice"]


class PiperTrainingStopped(Exception):
    """``should_stop()`` turned true: the training gave its work back; nothing was kept."""


@dataclass(frozen=True, slots=True)
class PiperVoiceResult:
    model: bytes  # as ``PiperBackend.build_voice`` packs a voice: ``load_voice`` takes it
    report: dict[str, Any]  # JSON-ready (see ``train_piper_voice``)
    reference_index: int  # the clip the one-clip baseline was fitted on


def train_piper_voice(
    backend: PiperBackend,
    clips: Sequence[TrainingClip],
    *,
    holdout: int = DEFAULT_HOLDOUT,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    encoder: SpeakerEncoder | None = None,
) -> PiperVoiceResult:
    """Fit the dataset conversion on every clip but the held-out ones, and measure it against the one-clip voice
    (see the module docstring). ``on_progress`` gets ``{"stage": "analyse" | "fit" | "measure", "done",
    "total"}`` after each clip analysed, each fit iteration and each held-out clip measured. The same clips and
    ``seed`` give the same model bytes."""
    from chorus.models.cloning.conversion_dataset import ParallelClip, fit_dataset

    if holdout < 1:
        raise ValueError("holdout must be at least 1: the gain is measured on held-out clips")
    if len(clips) < holdout + 2:
        raise ValueError(f"{len(clips)} clips: need at least {holdout + 2} ({holdout} held out, 2 to fit on)")
    encoder = encoder or SpeakerEncoder()

    def progress(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress({"stage": stage, "done": done, "total": total})
        if should_stop is not None and should_stop():
            raise PiperTrainingStopped(f"stopped during {stage} ({done}/{total})")

    reference_index, reference = _registration(clips)
    held_out = pick_held_out(clips, holdout, seed=seed, exclude=reference_index)
    fit_indices = [i for i in range(len(clips)) if i not in set(held_out)]
    parallel = [
        ParallelClip(clips[i].file_name, clips[i].audio, clips[i].sample_rate, clips[i].text) for i in fit_indices
    ]
    t0 = time.perf_counter()
    fit = fit_dataset(parallel, backend.render, sample_rate=backend.sample_rate, seed=seed, on_progress=progress)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_clip_bytes = backend.build_voice(reference)
    one_clip_s = time.perf_counter() - t0
    model = voice_model.pack(backend.voice_model_format, fit.model.to_bytes())
    similarity = _measure(
        backend,
        encoder,
        [clips[i] for i in held_out],
        {"one_clip": _load(backend, one_clip_bytes), "dataset": _load(backend, model)},
        progress,
    )
    used = set(fit.clips_used)
    report: dict[str, Any] = {
        "method": "piper-world conversion, joint-density GMM fitted on every clip (DTW within each clip)",
        "seed": seed,
        "clips": len(clips),
        "clips_fit": list(fit.clips_used),
        "clips_skipped": fit.clips_skipped,
        "clips_held_out": [clips[i].file_name for i in held_out],
        "reference_clip": clips[reference_index].file_name,
        "fit_minutes": round(sum(_seconds(c) for c in clips if c.file_name in used) / 60.0, ROUND),
        "held_out_minutes": round(sum(_seconds(clips[i]) for i in held_out) / 60.0, ROUND),
        "reference_seconds": round(_seconds(clips[reference_index]), 2),
        "fit_seconds": round(fit_s, 2),
        "one_clip_fit_seconds": round(one_clip_s, 2),
        "warp": round(fit.model.warp, ROUND),
        "warps": list(fit.warps),
        "pairs": fit.num_pairs,
        "gmm_frames": fit.num_gmm_frames,
        "similarity": similarity,
    }
    return PiperVoiceResult(model=model, report=report, reference_index=reference_index)


def pick_reference(clips: Sequence[TrainingClip]) -> list[int]:
    """Clip indices in the order a user would register them as the one reference clip: the longest of at most
    ``REFERENCE_MAX_S`` first (5-15 s is what registration asks for), then longer clips, shortest first."""
    fitting = sorted(
        (i for i, c in enumerate(clips) if _seconds(c) <= REFERENCE_MAX_S), key=lambda i: -_seconds(clips[i])
    )
    longer = sorted((i for i, c in enumerate(clips) if _seconds(c) > REFERENCE_MAX_S), key=lambda i: _seconds(clips[i]))
    return fitting + longer


def pick_held_out(clips: Sequence[TrainingClip], count: int, *, seed: int, exclude: int) -> list[int]:
    """``count`` clip indices spread over the dataset: the clips (but ``exclude``, preferring those of at least
    ``MIN_HELD_OUT_S``) cut into ``count`` equal strata in dataset order, one drawn from each (seeded)."""
    candidates = [i for i in range(len(clips)) if i != exclude]
    long_enough = [i for i in candidates if _seconds(clips[i]) >= MIN_HELD_OUT_S]
    pool = long_enough if len(long_enough) >= count else candidates
    rng = np.random.default_rng(seed)
    bounds = [round(k * len(pool) / count) for k in range(count + 1)]
    return [pool[int(rng.integers(bounds[k], bounds[k + 1]))] for k in range(count)]


def _registration(clips: Sequence[TrainingClip]) -> tuple[int, ReferenceVoice]:
    """(the reference clip's index, the voice a zero-shot registration of it hands ``build_voice``: after the
    upload preprocessing, with its transcript). A clip the upload checks refuse is passed over for the next."""
    refusals: list[str] = []
    for index in pick_reference(clips):
        clip = clips[index]
        try:
            ref = preprocess_reference(wav_bytes(np.asarray(clip.audio, np.float32), clip.sample_rate))
        except InvalidReferenceError as e:
            refusals.append(f"{clip.file_name}: {e}")
            continue
        return index, ReferenceVoice("one-clip", np.asarray(ref.audio), ref.sample_rate, clip.text)
    raise ValueError("no clip of the dataset passes as a reference clip: " + "; ".join(refusals[:3]))


def _measure(
    backend: PiperBackend,
    encoder: SpeakerEncoder,
    held_out: Sequence[TrainingClip],
    models: dict[str, ConversionModel],
    progress: Callable[[str, int, int], None],
) -> dict[str, Any]:
    """Similarities of each model's conversion of Piper's rendering to each held-out real clip (and Piper's own)."""
    real = [encoder.embed(np.asarray(c.audio, np.float32), c.sample_rate) for c in held_out]
    mean = np.mean(real, axis=0)
    mean /= np.linalg.norm(mean)
    per_clip: list[dict[str, Any]] = []
    for done, (clip, target) in enumerate(zip(held_out, real, strict=True), start=1):
        source = backend.render(clip.text)
        row: dict[str, Any] = {"clip": clip.file_name}
        outputs = {"piper": source} | {name: model.convert(source) for name, model in models.items()}
        for name, audio in outputs.items():
            embedding = encoder.embed(audio, backend.sample_rate)
            row[name] = round(SpeakerEncoder.similarity(embedding, target), ROUND)
            row[name + "_to_mean"] = round(SpeakerEncoder.similarity(embedding, mean), ROUND)
        per_clip.append(row)
        progress("measure", done, len(held_out))
    means = {key: round(float(np.mean([r[key] for r in per_clip])), ROUND) for key in per_clip[0] if key != "clip"}
    return {
        "measure": (
            "cosine similarity of GE2E (resemblyzer) speaker embeddings; for each held-out clip, Piper renders its "
            "transcript, each model converts the whole rendering, and the result is compared with the real held-out "
            "clip of the same words (and with the normalised mean embedding of all held-out real clips: *_to_mean); "
            "one_clip is a zero-shot registration of reference_clip (upload preprocessing, build_voice with its "
            "transcript); piper is the unconverted rendering"
        ),
        "per_clip": per_clip,
        **means,
        "gain": round(means["dataset"] - means["one_clip"], ROUND),
        "gain_to_mean": round(means["dataset_to_mean"] - means["one_clip_to_mean"], ROUND),
    }


def _load(backend: PiperBackend, data: bytes) -> ConversionModel:
    """The model ``load_voice`` would serve from ``data``."""
    from chorus.models.cloning.conversion import ConversionModel

    return ConversionModel.from_bytes(voice_model.unpack(data, backend.voice_model_format))


def _seconds(clip: TrainingClip) -> float:
    return len(clip.audio) / clip.sample_rate
