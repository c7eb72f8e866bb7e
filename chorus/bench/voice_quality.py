"""``chorus bench-voices``: how much a cloned Piper voice sounds like its target speaker, and what it costs.

For each target speaker (offline synthesizers: festival, flite and espeak-ng voices, none of them Piper's), a
~8 s reference with its transcript is synthesised, conversions are fitted against Piper's rendering of the same
words, new sentences spoken by Piper are converted in the engine's chunk sizes, and a resemblyzer embedding of
the result is compared with a held-out clip of the target. Beside each conversion:

* floor: Piper unconverted;
* baseline: WORLD log-F0 mapping plus a fixed frequency warp (the prior art);
* fallback: ``ConversionModel.fit_statistics`` (no transcript);
* ours: ``ConversionModel.fit`` (parallel, with the transcript);
* ceiling: the target against another held-out clip of itself.

The speakers come in two sets (``voice_speakers``): the development set, on which the method is tuned, and the
test set, other speakers with other texts, which is only reported. ``--sets dev`` runs the development set
alone (what tuning runs). Conversion cost is the real-time factor of streaming conversion on one thread (median
of repeats); the fit time is what registering a voice spends on the conversion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chorus.models.base import SpeechInput, SynthesisParams
from chorus.models.cloning.conversion import ConversionModel
from chorus.models.cloning.voice_model import pack
from chorus.voices.embedding import SpeakerEncoder

from .voice_report import SpeakerResult, mean_similarity, render_latency, render_markdown, render_table, write_plot
from .voice_speakers import DEV, INSTALL_HINT, QUICK_SPEAKERS, SETS, Speaker, SpeakerSet, synthesize_target

if TYPE_CHECKING:
    from chorus.models.piper import PiperBackend

# The engine's chunk schedule (Piper hops of 256 samples): a short first window, then growing ones.
ENGINE_CHUNK_FRAMES = (48, 86, 172, 258)
HOP = 256
# The baseline's warp: formants raised for a higher-pitched target, lowered for a lower one, else unchanged.
BASELINE_WARP = 1.12
BASELINE_PITCH_RATIO = 1.25


def engine_chunks(audio: np.ndarray) -> Iterator[np.ndarray]:
    """``audio`` cut like the engine's output: 48, 86, 172, then 258 hops per chunk, the last one partial."""
    start = 0
    for i in range(audio.size):
        size = ENGINE_CHUNK_FRAMES[min(i, len(ENGINE_CHUNK_FRAMES) - 1)] * HOP
        if start >= audio.size:
            return
        yield audio[start : start + size]
        start += size


def convert_streaming(model: ConversionModel, audio: np.ndarray) -> tuple[np.ndarray, float]:
    """(converted audio, seconds spent) feeding ``audio`` in engine-sized chunks, then flushing."""
    t0 = time.perf_counter()
    converter = model.stream()
    parts = [converter.process(chunk) for chunk in engine_chunks(audio)]
    parts.append(converter.flush())
    return np.concatenate(parts), time.perf_counter() - t0


# -- the run ------------------------------------------------------------------------------------------------


def _baseline_warp(model_f0_ratio: float) -> float:
    if model_f0_ratio > BASELINE_PITCH_RATIO:
        return BASELINE_WARP
    if model_f0_ratio < 1 / BASELINE_PITCH_RATIO:
        return 1 / BASELINE_WARP
    return 1.0


def _f0_ratio(target: np.ndarray, target_sr: int, source: np.ndarray, source_sr: int) -> float:
    import pyworld

    def median_f0(audio: np.ndarray, rate: int) -> float:
        f0, _ = pyworld.dio(audio.astype(np.float64), rate, f0_floor=65.0, f0_ceil=500.0)
        return float(np.median(f0[f0 > 0]))

    return median_f0(target, target_sr) / median_f0(source, source_sr)


def run_speaker(
    speaker: Speaker,
    speaker_set: SpeakerSet,
    *,
    piper: Callable[[str], np.ndarray],
    piper_rate: int,
    sentences: list[np.ndarray],
    statistics_source: np.ndarray,
    encoder: SpeakerEncoder,
    repeats: int,
) -> SpeakerResult:
    reference, ref_sr = synthesize_target(speaker, speaker_set.reference_text)
    held_out, held_sr = synthesize_target(speaker, speaker_set.held_out_text)
    ceiling_clip, ceil_sr = synthesize_target(speaker, speaker_set.ceiling_text)
    source = piper(speaker_set.reference_text)
    target_embedding = encoder.embed(held_out, held_sr)

    def similarity(audio: np.ndarray, rate: int) -> float:
        return round(SpeakerEncoder.similarity(encoder.embed(audio, rate), target_embedding), 4)

    fitters: dict[str, Callable[[], ConversionModel]] = {
        "baseline": lambda: ConversionModel.fit_fixed_warp(
            reference,
            ref_sr,
            source,
            piper_rate,
            sample_rate=piper_rate,
            warp=_baseline_warp(_f0_ratio(reference, ref_sr, source, piper_rate)),
        ),
        "fallback": lambda: ConversionModel.fit_statistics(
            reference, ref_sr, statistics_source, piper_rate, sample_rate=piper_rate
        ),
        "ours": lambda: ConversionModel.fit(reference, ref_sr, source, piper_rate, sample_rate=piper_rate),
    }
    sims = {"floor": similarity(np.concatenate(sentences), piper_rate)}
    rtf: dict[str, float] = {}
    fit_s: dict[str, float] = {}
    warp: dict[str, float] = {}
    for method, fit in fitters.items():
        t0 = time.perf_counter()
        model = fit()
        fit_s[method] = round(time.perf_counter() - t0, 3)
        warp[method] = round(model.warp, 3)
        ratios: list[float] = []
        converted: list[np.ndarray] = []
        for repeat in range(repeats):
            for sentence in sentences:
                out, seconds = convert_streaming(model, sentence)
                ratios.append(seconds / (sentence.size / piper_rate))
                if repeat == 0:
                    converted.append(out)
        rtf[method] = round(statistics.median(ratios), 4)
        sims[method] = similarity(np.concatenate(converted), piper_rate)
    sims["ceiling"] = similarity(ceiling_clip, ceil_sr)
    return SpeakerResult(speaker.name, speaker.sex, speaker.family, sims, rtf, fit_s, warp)


def run_set(
    speaker_set: SpeakerSet,
    speakers: Sequence[Speaker],
    backend: PiperBackend,
    *,
    statistics_source: np.ndarray,
    encoder: SpeakerEncoder,
    num_sentences: int,
    repeats: int,
) -> list[SpeakerResult]:
    """Every speaker of the set that can be synthesised here (the others are skipped, saying why)."""
    sentences = [backend.render(text) for text in speaker_set.new_sentences[:num_sentences]]
    results = []
    for speaker in speakers:
        try:
            result = run_speaker(
                speaker,
                speaker_set,
                piper=backend.render,
                piper_rate=backend.sample_rate,
                sentences=sentences,
                statistics_source=statistics_source,
                encoder=encoder,
                repeats=repeats,
            )
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"skipping {speaker.name}: {e}", file=sys.stderr)
            continue
        results.append(result)
        print(f"[{speaker_set.name}] {speaker.name}: " + _similarities(result), flush=True)
    return results


def _similarities(result: SpeakerResult) -> str:
    return ", ".join(f"{m} {v:.3f}" for m, v in result.similarity.items())


def first_chunk_latency(
    backend: PiperBackend, voices: dict[str, str], texts: Sequence[str], repeats: int
) -> dict[str, dict[str, float]]:
    """Seconds from a request's arrival at the backend to its first chunk of audio (text front end, encoder,
    first decoder window and, for a cloned voice, its conversion), median over texts and repeats, for each
    voice (measured in turn, so that noise hits them alike); and the audio that chunk holds. Streaming latency
    is unchanged "within one chunk" when the difference is small against the chunk's own duration."""
    params = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
    seconds: dict[str, list[float]] = {label: [] for label in voices}
    chunk_s: dict[str, list[float]] = {label: [] for label in voices}
    for _ in range(repeats):
        for i, text in enumerate(texts):
            for label, voice_id in voices.items():
                inp = SpeechInput(f"latency-{i}", text, voice_id, params)
                t0 = time.perf_counter()
                (slot,) = backend.prefill([(inp, backend.preprocess(inp))])
                out = backend.step([slot])[0]
                seconds[label].append(time.perf_counter() - t0)
                chunk_s[label].append(out.audio.size / backend.sample_rate)
                backend.release(slot)
    return {
        label: {"first_chunk_s": round(statistics.median(seconds[label]), 4), "chunk_audio_s": min(chunk_s[label])}
        for label in voices
    }


def _latency(
    backend: PiperBackend, speaker: Speaker, texts: Sequence[str], *, repeats: int
) -> dict[str, dict[str, float]]:
    """First-chunk latency of the base voice and of a voice cloned from ``speaker`` (ours, dev texts)."""
    reference, rate = synthesize_target(speaker, DEV.reference_text)
    model = ConversionModel.fit(
        reference, rate, backend.render(DEV.reference_text), backend.sample_rate, sample_rate=backend.sample_rate
    )
    backend.load_voice("voice_bench", pack(backend.voice_model_format, model.to_bytes()))
    return first_chunk_latency(backend, {"base": backend.voice_id, "cloned": "voice_bench"}, texts, repeats)


def _single_thread() -> None:
    """Conversion is timed on one thread: BLAS pools (if any are used) are limited to one thread."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def _all(results: dict[str, list[SpeakerResult]]) -> list[SpeakerResult]:
    return [r for rows in results.values() for r in rows]


def _texts(speaker_set: SpeakerSet) -> dict[str, object]:
    return {
        "reference": speaker_set.reference_text,
        "held_out": speaker_set.held_out_text,
        "ceiling": speaker_set.ceiling_text,
        "new_sentences": list(speaker_set.new_sentences),
    }


def _parse_sets(value: str) -> list[SpeakerSet]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"speaker sets are {', '.join(SETS)}; got {value!r}")
    return [SETS[n] for n in SETS if n in names]  # dev first, whatever the order given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus bench-voices", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one speaker of each set, two sentences: a smoke test (< 90 s)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for voices.{json,md,png}")
    parser.add_argument("--repeats", type=int, default=None, help="conversion timing repeats (default 3, quick 1)")
    parser.add_argument(
        "--sets", type=_parse_sets, default=list(SETS.values()), help="speaker sets: dev, test or dev,test (default)"
    )
    args = parser.parse_args(argv)
    _single_thread()
    sets: list[SpeakerSet] = args.sets
    num_sentences = 2 if args.quick else 4
    repeats = args.repeats or (1 if args.quick else 3)

    from chorus.models.piper import STATISTICS_TEXT, PiperBackend

    started = time.perf_counter()
    try:
        backend = PiperBackend(num_workers=1)
    except Exception as e:  # any failure to load the base voice ends the run, with its reason
        print(f"cannot load the Piper voice: {e}", file=sys.stderr)
        return 1
    results: dict[str, list[SpeakerResult]] = {}
    try:
        statistics_source = backend.render(STATISTICS_TEXT)
        encoder = SpeakerEncoder()
        encoder.warm_up()
        for speaker_set in sets:
            speakers = [s for s in speaker_set.speakers if not args.quick or s.name in QUICK_SPEAKERS]
            rows = run_set(
                speaker_set,
                speakers,
                backend,
                statistics_source=statistics_source,
                encoder=encoder,
                num_sentences=num_sentences,
                repeats=repeats,
            )
            if rows:
                results[speaker_set.name] = rows
        # A voice cloned from the first speaker measured, saying the first set's new sentences.
        measured = [s for ss in sets for s in ss.speakers if s.name in {r.name for r in _all(results)}]
        latency: dict[str, dict[str, float]] = {}
        if measured:
            texts = sets[0].new_sentences[:num_sentences]
            latency = _latency(backend, measured[0], texts, repeats=3 if args.quick else 10)
    finally:
        backend.close()
    if not results:
        print(f"no target speaker could be synthesised: {INSTALL_HINT}", file=sys.stderr)
        return 1
    command = "chorus bench-voices" + (" --quick" if args.quick else "")
    if len(sets) < len(SETS):
        command += " --sets " + ",".join(s.name for s in sets)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
        "repeats": repeats,
        "sets": {
            name: {
                "mean_similarity": mean_similarity(rows),
                "speakers": [asdict(r) for r in rows],
                "texts": _texts(SETS[name]),
            }
            for name, rows in results.items()
        },
        "latency": latency,
    }
    (args.out / "voices.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "voices.md").write_text(render_markdown(results, latency, command))
    write_plot(results, args.out / "voices.png")
    for name, rows in results.items():
        print(f"\n{name} set\n" + render_table(rows))
    print(render_latency(latency))
    print(f"wrote {args.out / 'voices.json'}, voices.md, voices.png ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
