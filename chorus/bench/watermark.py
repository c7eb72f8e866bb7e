"""``chorus bench-watermark``: is chorus's watermark (chorus.watermark) found after the attacks a clip meets on
its way, never found in speech chorus did not make, quiet, and cheap?

Marked clips: the bundled Piper voice saying ``chorus.bench.corpus.text_for(i)`` (2-3 sentences, ~10 s), each
marked twice: without payload, and with a 16-bit payload (a hash of a made-up request id). The method's
parameters were tuned on the **dev** clips, ``text_for(0..9)``; this benchmark reports on **test** clips,
``text_for(10..)``, which no tuning saw. Each marked clip goes through every attack (codecs via PyAV's ffmpeg,
resampling via soxr, noise, gain, a 3 s excerpt at a random odd sample offset) and ``detect`` with the key.

Clean clips (false positives): other synthesisers (espeak-ng voices and variants, festival and flite voices; see
``CLEAN_SPEAKERS``) saying ``text_for(200..)``, trimmed and normalised as an upload; also the unmarked Piper test
clips. Any detection there is a false positive.

Cost: CPU time of this thread (numpy's FFT is single-threaded) to mark each clip through ``MarkStream`` in 100 ms
chunks, per audio second, median over ``--repeats``; against Piper's synthesis of the same clips (one worker on
this thread) in the same run. SNR: marked vs clean, over the whole clip.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

from chorus.audio.decode import decode_audio
from chorus.audio.resample import resample
from chorus.bench.corpus import text_for
from chorus.bench.voice_speakers import Speaker, synthesize_target
from chorus.watermark import DEFAULT_STRENGTH, THRESHOLD, Detection, Watermarker, detect

DEV_CLIPS = 10  # text_for(0..9): tuning only
CLEAN_TEXT_START = 200
EXCERPT_SECONDS = 3
CHUNK_SECONDS = 0.1
_ESPEAK = (
    "en-us", "en-gb-x-rp", "en", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en+f3", "en+m3", "en+f1", "en+m7", "en-us+f4", "en-us+m2", "en-gb+f2", "en-gb-x-rp+m4",
)  # fmt: skip
_FESTIVAL = (
    "kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts", "upc_ca_ona_hts", "lp_diphone", "czech_dita",
    "czech_machac", "suo_fi_lj_diphone", "hy_fi_mv_diphone",
)  # fmt: skip
_FLITE = ("awb", "rms", "slt", "kal16")
CLEAN_SPEAKERS: tuple[Speaker, ...] = (
    *(Speaker(v, "espeak", v, "?", "formant") for v in _ESPEAK),
    *(Speaker(v, "festival", v, "?", "festival") for v in _FESTIVAL),
    *(Speaker(v, "flite", v, "?", "clustergen") for v in _FLITE),
)

Attack = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, int]]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", type=int, default=20, help="marked Piper test clips")
    p.add_argument("--clean", type=int, default=52, help="clean clips from other synthesisers (false positives)")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats of the embedding")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="the mark's log-magnitude step")
    p.add_argument("--seed", type=int, default=0, help="noise and excerpt offsets")
    p.add_argument("--out", type=Path, default=Path("bench/results/watermark"), help="folder for the results")


def codec_round_trip(pcm: np.ndarray, rate: int, fmt: str, bit_rate: int) -> tuple[np.ndarray, int]:
    """Encode with ffmpeg's ``fmt`` encoder at ``bit_rate`` and decode back (Opus at 48 kHz, as ffmpeg would)."""
    container, codec = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac")}[fmt]
    if fmt == "opus" and rate not in (8000, 12000, 16000, 24000, 48000):
        pcm, rate = resample(pcm, rate, 48000), 48000
    sink = io.BytesIO()
    with av.open(sink, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if not isinstance(stream, av.audio.stream.AudioStream):
            raise TypeError(f"{codec} is not an audio codec")
        stream.bit_rate = bit_rate
        samples = np.ascontiguousarray(pcm, np.float32).reshape(1, -1)
        for i in range(0, samples.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(samples[:, i : i + 4096].copy(), format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return decode_audio(sink.getvalue())


def _noise(pcm: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    sigma = np.sqrt(np.mean(pcm.astype(np.float64) ** 2) / 10 ** (20 / 10))
    return (pcm + rng.standard_normal(pcm.size) * sigma).astype(np.float32), rate


def _excerpt(pcm: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    start = int(rng.integers(0, max(pcm.size - EXCERPT_SECONDS * rate, 1) // 2)) * 2 + 1  # odd: off every grid
    return pcm[start : start + EXCERPT_SECONDS * rate], rate


ATTACKS: dict[str, Attack] = {
    "none": lambda x, r, _: (x, r),
    "mp3 128k": lambda x, r, _: codec_round_trip(x, r, "mp3", 128_000),
    "mp3 64k": lambda x, r, _: codec_round_trip(x, r, "mp3", 64_000),
    "opus 32k": lambda x, r, _: codec_round_trip(x, r, "opus", 32_000),
    "aac 96k": lambda x, r, _: codec_round_trip(x, r, "aac", 96_000),
    "aac 64k": lambda x, r, _: codec_round_trip(x, r, "aac", 64_000),
    "resample 16k": lambda x, r, _: (resample(x, r, 16000), 16000),
    "noise 20 dB": _noise,
    "gain +6 dB": lambda x, r, _: (np.clip(x * 2.0, -1.0, 1.0).astype(np.float32), r),
    "gain -6 dB": lambda x, r, _: ((x * 0.5).astype(np.float32), r),
    "excerpt 3 s": _excerpt,
}


def payload_for(request_id: str) -> int:
    """A 16-bit hash of a request id, as a server would embed."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=2).digest(), "little")


def run(args: argparse.Namespace) -> int:
    from chorus.bench.quality_piper import render
    from chorus.models.base import SynthesisParams
    from chorus.models.piper import PiperBackend

    if args.clips < 1 or args.clean < 1:
        raise ValueError("--clips and --clean must be at least 1")
    key = b"chorus-bench-watermark"
    rng = np.random.default_rng(args.seed)
    print(f"synthesising {args.clips} Piper test clips ...", flush=True)
    backend = PiperBackend(None, num_workers=1)
    try:
        rate = backend.sample_rate
        texts = [text_for(DEV_CLIPS + i) for i in range(args.clips)]
        start = time.thread_time()
        clips = [render(backend, text, SynthesisParams(seed=i)) for i, text in enumerate(texts)]
        synth_cost = (time.thread_time() - start) / (sum(c.size for c in clips) / rate)
    finally:
        backend.close()
    marker = Watermarker(key, rate, args.strength)
    payloads = [payload_for(f"request-{i}") for i in range(args.clips)]
    marked = {
        "no payload": [marker.mark(c) for c in clips],
        "payload": [marker.mark(c, p) for c, p in zip(clips, payloads, strict=True)],
    }
    snr = [_snr_db(c, m) for c, m in zip(clips, marked["payload"], strict=True)]
    print("attacking and detecting ...", flush=True)
    attacks: dict[str, Any] = {}
    for name, attack in ATTACKS.items():
        row: dict[str, Any] = {}
        for variant, audio in marked.items():
            found = [detect(*attack(a, rate, rng), key) for a in audio]
            row[variant] = _summary(found, payloads if variant == "payload" else None)
        attacks[name] = row
    print(f"synthesising {args.clean} clean clips (espeak-ng, festival, flite) ...", flush=True)
    clean_scores = {}
    for i in range(args.clean):
        speaker = CLEAN_SPEAKERS[i % len(CLEAN_SPEAKERS)]
        clean_audio, clean_rate = synthesize_target(speaker, text_for(CLEAN_TEXT_START + i))
        clean_scores[f"{speaker.synthesizer} {speaker.voice} #{i}"] = detect(clean_audio, clean_rate, key).score
    piper_clean = [detect(c, rate, key).score for c in clips]
    wrong_key = [detect(m, rate, b"another key").score for m in marked["payload"]]
    cost = _embed_cost(marker, clips, rate, args.repeats)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "clips": {
            "dev (tuning only, not reported)": f"Piper, text_for(0..{DEV_CLIPS - 1})",
            "test (reported)": f"Piper, text_for({DEV_CLIPS}..{DEV_CLIPS + args.clips - 1}), "
            f"{sum(c.size for c in clips) / rate:.1f} s at {rate} Hz",
            "clean": f"{args.clean} clips, {len(CLEAN_SPEAKERS)} voices, text_for({CLEAN_TEXT_START}..)",
        },
        "strength": args.strength,
        "threshold": THRESHOLD,
        "snr_db": {"min": min(snr), "median": statistics.median(snr), "max": max(snr)},
        "attacks": attacks,
        "false_positives": {
            "clean_clips": len(clean_scores),
            "detected": sum(s >= THRESHOLD for s in clean_scores.values()),
            "max_score": max(clean_scores.values()),
            "scores": clean_scores,
            "unmarked_piper_max_score": max(piper_clean),
            "unmarked_piper_detected": sum(s >= THRESHOLD for s in piper_clean),
            "wrong_key_max_score": max(wrong_key),
            "wrong_key_detected": sum(s >= THRESHOLD for s in wrong_key),
        },
        "cost": {
            "embed_core_s_per_audio_s": cost,
            "synthesis_core_s_per_audio_s": synth_cost,
            "ratio": cost / synth_cost,
            "how": f"MarkStream in {CHUNK_SECONDS * 1000:.0f} ms chunks, this thread's CPU time, median of "
            f"{args.repeats}; Piper: one worker on this thread, the same clips",
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "watermark.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _plot(clips[0], marked["payload"][0], rate, args.out / "watermark.png")
    _print_table(result)
    print(f"wrote {args.out / 'watermark.json'} and {args.out / 'watermark.png'}")
    missed = any(v["detected"] < v["clips"] for row in attacks.values() for v in row.values())
    false_positives = result["false_positives"]
    return 1 if missed or false_positives["detected"] or false_positives["unmarked_piper_detected"] else 0


def _summary(found: list[Detection], payloads: list[int] | None) -> dict[str, Any]:
    scores = [d.score for d in found]
    out: dict[str, Any] = {
        "clips": len(found),
        "detected": sum(d.watermarked for d in found),
        "score_min": min(scores),
        "score_median": statistics.median(scores),
    }
    if payloads is not None:
        decoded = [(d.payload, p) for d, p in zip(found, payloads, strict=True) if d.payload is not None]
        out["payload_decoded"] = len(decoded)
        out["payload_wrong"] = sum(got != want for got, want in decoded)
    return out


def _snr_db(clean: np.ndarray, marked: np.ndarray) -> float:
    noise = float(np.sum((marked.astype(np.float64) - clean) ** 2))
    return float(10 * np.log10(float(np.sum(clean.astype(np.float64) ** 2)) / max(noise, 1e-30)))


def _embed_cost(marker: Watermarker, clips: list[np.ndarray], rate: int, repeats: int) -> float:
    chunk = int(CHUNK_SECONDS * rate)
    seconds = sum(c.size for c in clips) / rate
    samples = []
    for _ in range(max(repeats, 1)):
        start = time.thread_time()
        for clip in clips:
            stream = marker.stream(payload=1)
            for i in range(0, clip.size, chunk):
                stream.push(clip[i : i + chunk])
            stream.flush()
        samples.append((time.thread_time() - start) / seconds)
    return statistics.median(samples)


def _plot(clean: np.ndarray, marked: np.ndarray, rate: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    titles = ("clean (Piper)", "marked", "difference (marked - clean), same colour scale")
    for ax, audio, title in zip(axes, (clean, marked, marked - clean), titles, strict=True):
        ax.specgram(audio, NFFT=int(0.04 * rate), Fs=rate, noverlap=int(0.02 * rate), vmin=-140, vmax=-20)
        ax.set_title(title)
        ax.set_ylabel("Hz")
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"\nthreshold z ≥ {result['threshold']:.2f} (false-positive bound 1e-9 per clip); strength {result['strength']}"
    )
    print(f"{'attack':<14} {'no payload: found':>18} {'min z':>6} {'med z':>6} | {'payload: found':>14} {'min z':>6} "
          f"{'med z':>6} {'decoded':>8} {'wrong':>6}")  # fmt: skip
    for name, row in result["attacks"].items():
        a, b = row["no payload"], row["payload"]
        print(
            f"{name:<14} {a['detected']:>12}/{a['clips']:<5} {a['score_min']:>6.1f} {a['score_median']:>6.1f} | "
            f"{b['detected']:>8}/{b['clips']:<5} {b['score_min']:>6.1f} {b['score_median']:>6.1f} "
            f"{b['payload_decoded']:>5}/{b['clips']:<2} {b['payload_wrong']:>6}"
        )
    fp, cost, snr = result["false_positives"], result["cost"], result["snr_db"]
    print(
        f"false positives: {fp['detected']}/{fp['clean_clips']} clean clips (max z {fp['max_score']:.2f}); "
        f"unmarked Piper {fp['unmarked_piper_detected']} (max {fp['unmarked_piper_max_score']:.2f}); "
        f"wrong key {fp['wrong_key_detected']} (max {fp['wrong_key_max_score']:.2f})"
    )
    print(f"mark SNR: min {snr['min']:.1f} dB, median {snr['median']:.1f} dB, max {snr['max']:.1f} dB")
    print(
        f"embed cost: {cost['embed_core_s_per_audio_s'] * 1000:.2f} ms per audio s; Piper synthesis "
        f"{cost['synthesis_core_s_per_audio_s'] * 1000:.1f} ms per audio s; ratio {cost['ratio'] * 100:.2f} %"
    )
    for name, what in result["clips"].items():
        print(f"{name}: {what}")
