"""``chorus bench-quality``: a lossy Piper option (int8 decoder, fewer decoder context frames) through the quality
gate (chorus.bench.quality_gate) against the float voice, and what it saves in compute.

Reference and candidate are two ``PiperBackend``s of the same voice on one worker thread each; every sentence is
rendered through the backend's own streaming path (windows, context, clipping) with noise scales 0, so the two
renderings differ only by the option under test and have the same durations. The sentences are the benchmark
corpus (chorus.bench.corpus, 50 sentences), none of which calibrates the int8 decoder.

``--yardstick`` also scores the float voice against itself with two noise seeds (the voice's noise scale,
phoneme-width noise 0 so that durations match): the difference Piper's own sampling makes, which the gate's
bounds sit under.

Compute: core-seconds (this thread's CPU time) per second of audio for the whole backend path (phonemization,
encoder, decoder windows), reference and candidate interleaved over ``--repeats`` runs; min/median/max.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from chorus.bench.corpus import SENTENCES
from chorus.bench.quality_gate import DEFAULT_BOUNDS, GateReport, Scorer
from chorus.bench.quality_report import QualityRun, Timing, print_checks, write_outputs
from chorus.models.base import SpeechInput, SynthesisParams

if TYPE_CHECKING:
    from chorus.models.piper import PiperBackend

QUIET = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
YARDSTICK_SEEDS = (1, 2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantization", choices=["none", "int8"], default="int8", help="the candidate's decoder")
    p.add_argument(
        "--context-frames", type=int, help="the candidate's decoder context frames (default: the voice's own)"
    )
    p.add_argument("--sentences", type=int, default=len(SENTENCES), help="held-out sentences (the gate needs 50)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing runs (0: no timing)")
    p.add_argument("--yardstick", action="store_true", help="also score two noise seeds of the float voice")
    p.add_argument("--model-path", type=Path, help="a Piper .onnx voice (default: the bundled one)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for quality-<candidate>.*")


def run(args: argparse.Namespace) -> int:
    from chorus.models.piper import PiperBackend

    if not 1 <= args.sentences <= len(SENTENCES):
        raise ValueError(f"--sentences must be 1..{len(SENTENCES)}")
    texts = list(SENTENCES[: args.sentences])
    label = candidate_label(args.quantization, args.context_frames)
    print(f"loading the float reference and the candidate ({label}) ...", flush=True)
    reference = PiperBackend(args.model_path, num_workers=1)
    candidate = PiperBackend(args.model_path, num_workers=1, quantization=args.quantization)
    try:
        if args.context_frames is not None:
            candidate.graph.context_frames = args.context_frames
        print(f"rendering {len(texts)} sentences with each ...", flush=True)
        ref_audio = render_all(reference, texts, QUIET)
        cand_audio = render_all(candidate, texts, QUIET)
        timings = time_backends({"float32 reference": reference, label: candidate}, texts, args.repeats)
        seeded = [SynthesisParams(noise_w_scale=0.0, seed=seed) for seed in YARDSTICK_SEEDS]
        yardstick_audio = [render_all(reference, texts, p) for p in seeded] if args.yardstick else []
    finally:
        reference.close()
        candidate.close()
    rate = reference.sample_rate
    print("scoring (WORLD analysis, GE2E embeddings, pocketsphinx) ...", flush=True)
    scorer = Scorer()
    ref_analysis = scorer.analyse(ref_audio, rate)
    report = GateReport(tuple(scorer.score(ref_analysis, scorer.analyse(cand_audio, rate), texts)), DEFAULT_BOUNDS)
    yardsticks: dict[str, GateReport] = {}
    if yardstick_audio:
        first, second = (scorer.analyse(a, rate) for a in yardstick_audio)
        noise = float(reference.graph.config.get("inference", {}).get("noise_scale", 0.667))
        name = f"float seed {YARDSTICK_SEEDS[1]} vs seed {YARDSTICK_SEEDS[0]} (noise scale {noise:g})"
        yardsticks[name] = GateReport(tuple(scorer.score(first, second, texts)), DEFAULT_BOUNDS)
    result = QualityRun(label, report, yardsticks, timings, conditions(reference, args, ref_audio))
    stem = "quality-" + label.replace(" ", "-").replace("+", "")
    for path in write_outputs(result, args.out, stem):
        print(f"wrote {path}")
    for t in timings:
        lo, mid, hi = t.per_audio_second
        print(f"{t.name}: {mid:.4f} core-s per audio-s (min {lo:.4f}, max {hi:.4f}; {t.repeats} repeats)")
    print_checks(report, label)
    return 0 if report.passed else 1


def candidate_label(quantization: str, context_frames: int | None) -> str:
    parts = ["int8"] if quantization == "int8" else ["float32"]
    if context_frames is not None:
        parts.append(f"context {context_frames}")
    return " + ".join(parts)


def render(backend: PiperBackend, text: str, params: SynthesisParams) -> np.ndarray:
    """One request through the backend's streaming path (preprocess, prefill, steps until finished)."""
    inp = SpeechInput("bench-quality", text, backend.voice_id, params)
    (slot,) = backend.prefill([(inp, backend.preprocess(inp))])
    chunks: list[np.ndarray] = []
    while not slot.is_finished:
        (output,) = backend.step([slot])
        if output.error is not None:
            raise RuntimeError(f"rendering {text!r} failed") from output.error
        chunks.append(output.audio)
    backend.release(slot)
    return np.concatenate(chunks).astype(np.float32)


def render_all(backend: PiperBackend, texts: Sequence[str], params: SynthesisParams) -> list[np.ndarray]:
    return [render(backend, text, params) for text in texts]


def time_backends(backends: dict[str, PiperBackend], texts: Sequence[str], repeats: int) -> list[Timing]:
    """Core-seconds per audio-second of each backend rendering ``texts``, the backends interleaved (ABBA order,
    so a drift in the machine's load hits both alike). The backends run on this thread (one worker each)."""
    samples: dict[str, list[float]] = {name: [] for name in backends}
    audio_seconds = dict.fromkeys(backends, 0.0)
    for repeat in range(repeats):
        order = list(backends.items())
        for name, backend in order if repeat % 2 == 0 else order[::-1]:
            start = time.thread_time()
            audio = render_all(backend, texts, QUIET)
            spent = time.thread_time() - start
            audio_seconds[name] = sum(a.size for a in audio) / backend.sample_rate
            samples[name].append(spent / audio_seconds[name])
    return [
        Timing(name, (min(v), statistics.median(v), max(v)), audio_seconds[name], len(v))
        for name, v in samples.items()
        if v
    ]


def conditions(backend: PiperBackend, args: argparse.Namespace, audio: Sequence[np.ndarray]) -> dict[str, str]:
    seconds = sum(a.size for a in audio) / backend.sample_rate
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "voice": backend.name,
        "sentences": f"{args.sentences} of chorus.bench.corpus ({seconds:.1f} s of audio), noise scales 0",
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, onnxruntime {ort.__version__}",
        "timing": "one thread, CPU time of the whole backend path, interleaved repeats (a busy machine: noisy)",
    }
