"""``chorus bench-voices``: how much a cloned Piper voice sounds like its target speaker, and what it costs.

For each target speaker (offline synthesizers: festival and espeak-ng voices, none of them Piper's), a ~8 s
reference with its transcript is synthesised, conversions are fitted against Piper's rendering of the same
words, new sentences spoken by Piper are converted in the engine's chunk sizes, and a resemblyzer embedding of
the result is compared with a held-out clip of the target. Beside each conversion:

* floor: Piper unconverted;
* baseline: WORLD log-F0 mapping plus a fixed frequency warp (the prior art);
* fallback: ``ConversionModel.fit_statistics`` (no transcript);
* ours: ``ConversionModel.fit`` (parallel, with the transcript);
* ceiling: the target against another held-out clip of itself.

Conversion cost is the real-time factor of streaming conversion on one thread (median of repeats); the fit time
is what registering a voice spends on the conversion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chorus.audio.decode import decode_audio
from chorus.models.base import SpeechInput, SynthesisParams
from chorus.voices.conversion import ConversionModel
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.voice_model import pack

if TYPE_CHECKING:
    from chorus.models.piper import PiperBackend

REFERENCE_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well."
)
HELD_OUT_TEXT = (
    "The juice of lemons makes fine punch. The box was thrown beside the parked truck. "
    "The hogs were fed chopped corn and garbage."
)
CEILING_TEXT = (
    "Four hours of steady work faced us. A large size in stockings is hard to sell. "
    "The boy was there when the sun rose."
)
NEW_SENTENCES = (
    "A rod is used to catch pink salmon, and the source of the huge river is the clear spring.",
    "Kick the ball straight and follow through, then help the woman get back to her feet.",
    "The small pup gnawed a hole in the sock while the fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest before the party starts tonight.",
)
# (name, synthesizer, voice): none of them is the base voice.
SPEAKERS = (
    ("kal (festival)", "festival", "kal_diphone"),
    ("ked (festival)", "festival", "ked_diphone"),
    ("slt (festival HTS)", "festival", "cmu_us_slt_arctic_hts"),
    ("en-us (espeak)", "espeak", "en-us"),
    ("en+f3 (espeak)", "espeak", "en+f3"),
    ("en-gb-x-rp (espeak)", "espeak", "en-gb-x-rp"),
    ("en+m3 (espeak)", "espeak", "en+m3"),
)
QUICK_SPEAKERS = ("slt (festival HTS)", "en+f3 (espeak)")
# The engine's chunk schedule (Piper hops of 256 samples): a short first window, then growing ones.
ENGINE_CHUNK_FRAMES = (48, 86, 172, 258)
HOP = 256
# The baseline's warp: formants raised for a higher-pitched target, lowered for a lower one, else unchanged.
BASELINE_WARP = 1.12
BASELINE_PITCH_RATIO = 1.25
METHODS = ("floor", "baseline", "fallback", "ours", "ceiling")
INSTALL_HINT = "install the benchmark voices with scripts/install_bench_voices.sh"


@dataclass
class SpeakerResult:
    name: str
    similarity: dict[str, float]
    rtf: dict[str, float]  # converted methods: wall seconds per second of audio, one thread, median
    fit_s: dict[str, float]
    warp: dict[str, float] = field(default_factory=dict)


# -- target speech ------------------------------------------------------------------------------------------


def synthesize_target(engine: str, voice: str, text: str) -> tuple[np.ndarray, int]:
    """(trimmed, level-normalised float32 speech, rate) from festival or espeak-ng, as a registration gets it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        if engine == "festival":
            cmd = [_tool("text2wave"), "-eval", f"(voice_{voice})", "-o", str(path)]
            subprocess.run(cmd, input=text.encode(), check=True, capture_output=True)
        else:
            subprocess.run([_tool("espeak-ng"), "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        audio, rate = decode_audio(path.read_bytes())
    return _trim_normalise(audio), rate


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: {INSTALL_HINT}")
    return path


def _trim_normalise(audio: np.ndarray, frame: int = 256) -> np.ndarray:
    """Cut leading/trailing silence (frames 40 dB under the peak frame), scale to -20 dBFS RMS (like an upload)."""
    n = audio.size // frame
    levels = 20 * np.log10(np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-9)
    loud = np.flatnonzero(levels > levels.max() - 40)
    clip = audio[loud[0] * frame : (loud[-1] + 1) * frame]
    gain = 10 ** (-20 / 20) / (np.sqrt(np.mean(clip**2)) + 1e-9)
    return np.asarray(np.clip(clip * gain, -1.0, 1.0), dtype=np.float32)


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
    name: str,
    engine: str,
    voice: str,
    *,
    piper: Callable[[str], np.ndarray],
    piper_rate: int,
    sentences: list[np.ndarray],
    statistics_source: np.ndarray,
    encoder: SpeakerEncoder,
    repeats: int,
) -> SpeakerResult:
    reference, ref_sr = synthesize_target(engine, voice, REFERENCE_TEXT)
    held_out, held_sr = synthesize_target(engine, voice, HELD_OUT_TEXT)
    ceiling_clip, ceil_sr = synthesize_target(engine, voice, CEILING_TEXT)
    source = piper(REFERENCE_TEXT)
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
    result = SpeakerResult(name, {}, {}, {})
    result.similarity["floor"] = similarity(np.concatenate(sentences), piper_rate)
    for method, fit in fitters.items():
        t0 = time.perf_counter()
        model = fit()
        result.fit_s[method] = round(time.perf_counter() - t0, 3)
        result.warp[method] = round(model.warp, 3)
        ratios: list[float] = []
        converted: list[np.ndarray] = []
        for repeat in range(repeats):
            for sentence in sentences:
                out, seconds = convert_streaming(model, sentence)
                ratios.append(seconds / (sentence.size / piper_rate))
                if repeat == 0:
                    converted.append(out)
        result.rtf[method] = round(statistics.median(ratios), 4)
        result.similarity[method] = similarity(np.concatenate(converted), piper_rate)
    result.similarity["ceiling"] = similarity(ceiling_clip, ceil_sr)
    return result


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


def _single_thread() -> None:
    """Conversion is timed on one thread: BLAS pools (if any are used) are limited to one thread."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


# -- output -------------------------------------------------------------------------------------------------


def _latency(
    backend: PiperBackend, speakers: Sequence[tuple[str, str, str]], texts: Sequence[str], *, repeats: int
) -> dict[str, dict[str, float]]:
    """First-chunk latency of the base voice and of a voice cloned from the first speaker (ours)."""
    _, engine, voice = speakers[0]
    reference, rate = synthesize_target(engine, voice, REFERENCE_TEXT)
    model = ConversionModel.fit(
        reference, rate, backend.render(REFERENCE_TEXT), backend.sample_rate, sample_rate=backend.sample_rate
    )
    backend.load_voice("voice_bench", pack(backend.voice_model_format, model.to_bytes()))
    return first_chunk_latency(backend, {"base": backend.voice_id, "cloned": "voice_bench"}, texts, repeats)


def render_latency(latency: dict[str, dict[str, float]]) -> str:
    if not latency:
        return ""
    base, cloned = latency["base"], latency["cloned"]
    extra_ms = 1000 * (cloned["first_chunk_s"] - base["first_chunk_s"])
    return (
        f"First chunk (median, one thread): base voice {1000 * base['first_chunk_s']:.0f} ms, cloned "
        f"{1000 * cloned['first_chunk_s']:.0f} ms (+{extra_ms:.0f} ms; the chunk holds "
        f"{1000 * cloned['chunk_audio_s']:.0f} ms of audio, {1000 * base['chunk_audio_s']:.0f} ms for the base voice, "
        "the rest follows with the next)."
    )


def render_table(results: list[SpeakerResult]) -> str:
    header = "| speaker | " + " | ".join(METHODS) + " | RTF ours | RTF fallback | fit ours (s) | fit fallback (s) |"
    lines = [header, "|" + "---|" * (len(METHODS) + 5)]
    rows = [(r.name, r.similarity, r.rtf, r.fit_s) for r in results]
    rows.append(
        (
            "**mean**",
            {m: float(np.mean([r.similarity[m] for r in results])) for m in METHODS},
            {m: float(np.mean([r.rtf[m] for r in results])) for m in ("ours", "fallback")},
            {m: float(np.mean([r.fit_s[m] for r in results])) for m in ("ours", "fallback")},
        )
    )
    for name, sim, rtf, fit in rows:
        cells = [f"{sim[m]:.3f}" for m in METHODS]
        cells += [f"{rtf['ours']:.3f}", f"{rtf['fallback']:.3f}", f"{fit['ours']:.2f}", f"{fit['fallback']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(results: list[SpeakerResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results] + ["mean"]
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(names)), 4.5))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        values = [r.similarity[method] for r in results]
        values.append(float(np.mean(values)))
        ax.bar(np.arange(len(names)) + (i - (len(METHODS) - 1) / 2) * width, values, width, label=method)
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0.4, 1.08)  # headroom for the legend
    ax.set_ylabel("resemblyzer cosine similarity to a held-out target clip")
    ax.set_title("Piper voice conversion towards each target speaker")
    ax.legend(ncol=len(METHODS), fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus bench-voices", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two speakers, two sentences: a smoke test (< 60 s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for voices.{json,md,png}")
    parser.add_argument("--repeats", type=int, default=None, help="conversion timing repeats (default 3, quick 1)")
    args = parser.parse_args(argv)
    _single_thread()
    speakers = [s for s in SPEAKERS if not args.quick or s[0] in QUICK_SPEAKERS]
    texts = NEW_SENTENCES[:2] if args.quick else NEW_SENTENCES
    repeats = args.repeats or (1 if args.quick else 3)

    from chorus.models.piper import STATISTICS_TEXT, PiperBackend

    started = time.perf_counter()
    try:
        backend = PiperBackend(num_workers=1)
    except Exception as e:  # any failure to load the base voice ends the run, with its reason
        print(f"cannot load the Piper voice: {e}", file=sys.stderr)
        return 1
    try:
        sentences = [backend.render(text) for text in texts]
        statistics_source = backend.render(STATISTICS_TEXT)
        encoder = SpeakerEncoder()
        encoder.warm_up()
        results = []
        for name, engine, voice in speakers:
            try:
                result = run_speaker(
                    name,
                    engine,
                    voice,
                    piper=backend.render,
                    piper_rate=backend.sample_rate,
                    sentences=sentences,
                    statistics_source=statistics_source,
                    encoder=encoder,
                    repeats=repeats,
                )
            except (RuntimeError, subprocess.CalledProcessError) as e:
                print(f"skipping {name}: {e}", file=sys.stderr)
                continue
            results.append(result)
            print(f"{name}: " + ", ".join(f"{m} {v:.3f}" for m, v in result.similarity.items()), flush=True)
        latency = _latency(backend, speakers, texts, repeats=3 if args.quick else 10) if results else {}
    finally:
        backend.close()
    if not results:
        print(f"no target speaker could be synthesised: {INSTALL_HINT}", file=sys.stderr)
        return 1
    table = render_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
        "mean_similarity": {m: round(float(np.mean([r.similarity[m] for r in results])), 4) for m in METHODS},
        "speakers": [asdict(r) for r in results],
        "latency": latency,
    }
    (args.out / "voices.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "voices.md").write_text(
        "# Voice conversion quality (resemblyzer similarity to a held-out target clip)\n\n"
        f"`chorus bench-voices{' --quick' if args.quick else ''}`; RTF: streaming conversion, one thread, "
        "median of repeats; fit: seconds to fit at registration.\n\n" + table + "\n\n" + render_latency(latency) + "\n"
    )
    write_plot(results, args.out / "voices.png")
    print(table)
    print(render_latency(latency))
    print(f"wrote {args.out / 'voices.json'}, voices.md, voices.png ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
