"""``chorus bench-qwen3``: the Qwen3-TTS engine against the library's own ``generate()``, in one run.

A random-weight model with the exact shapes of Qwen3-TTS-12Hz-1.7B or -0.6B (``tiny.SHAPES``; same FLOPs per
frame as the real model, noise as audio) or the tiny test model. For each number of concurrent streams N:

- chorus: N requests submitted at once to the engine (continuous batching, streaming every emit_every_frames);
  TTFA per request (submission → first audio chunk), audio-seconds per wall-second, and the engine's overhead:
  step wall time outside the model forwards (talker, code predictor, codec) relative to the forward time;
- baseline: the same N requests through ``Qwen3TTSModel.generate_custom_voice`` as one batch (the library's way:
  no streaming, so its first audio is its last), greedy on both sides so both make exactly ``--frames`` frames
  (a random talker never says EOS).

Runs on CPU with the tiny model (CI smoke) and on a GPU when there is one (``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from chorus.bench.corpus import text_for

SPEAKERS = ["aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", choices=["tiny", "0.6b", "1.7b"], default="tiny")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--streams", default="1,8,16,64", help="concurrent streams (comma-separated)")
    p.add_argument("--frames", type=int, default=48, help="frames per request (80 ms each)")
    p.add_argument("--repeats", type=int, default=1, help="runs per N; medians are reported")
    p.add_argument("--no-baseline", action="store_true", help="skip the library generate() baseline")
    p.add_argument("--out", default="bench/results", help="folder for qwen3-<shape>.json and .png")


def _percentile(values: list[float], pct: float) -> float:
    return float(np.percentile(np.asarray(values), pct)) if values else float("nan")


def _run_chorus(backend: Any, n: int, frames: int) -> dict[str, float]:
    from chorus.engine.engine import Engine, EngineConfig
    from chorus.engine.request import Request, RequestOutput
    from chorus.models.base import SpeechInput, SynthesisParams

    engine = Engine(backend, EngineConfig(max_slots=n, queue_limit=n, max_frames=frames))
    first: dict[str, float] = {}
    samples = [0]
    t0 = time.perf_counter()
    for i in range(n):
        rid = f"r{i}"

        def sink(out: RequestOutput, rid: str = rid) -> None:
            if out.audio.size and rid not in first:
                first[rid] = time.perf_counter() - t0
            samples[0] += out.audio.size

        inp = SpeechInput(rid, text_for(i), SPEAKERS[i % len(SPEAKERS)], SynthesisParams(temperature=0.0))
        engine.add_request(Request(inp, sink, prepared=backend.preprocess(inp)))
    backend.forward_seconds = {}
    step_wall = 0.0
    while engine.has_work():
        s0 = time.perf_counter()
        engine.step()
        step_wall += time.perf_counter() - s0
    wall = time.perf_counter() - t0
    forward = sum(backend.forward_seconds.values())
    backend.forward_seconds = None
    ttfa = list(first.values())
    return {
        "ttfa_p50_s": _percentile(ttfa, 50),
        "ttfa_p95_s": _percentile(ttfa, 95),
        "audio_s_per_s": samples[0] / backend.sample_rate / wall,
        "wall_s": wall,
        "forward_s": forward,
        "overhead_ratio": (step_wall - forward) / forward if forward else float("nan"),
    }


def _run_library(backend: Any, n: int, frames: int) -> dict[str, float]:
    texts = [text_for(i) for i in range(n)]
    speakers = [SPEAKERS[i % len(SPEAKERS)] for i in range(n)]
    t0 = time.perf_counter()
    wavs, rate = backend.tts.generate_custom_voice(
        text=texts,
        speaker=speakers,
        language=["auto"] * n,
        max_new_tokens=frames + 1,
        do_sample=False,
        subtalker_dosample=False,
    )
    _sync(backend)
    wall = time.perf_counter() - t0
    audio = sum(len(w) for w in wavs) / rate
    return {"ttfa_p50_s": wall, "ttfa_p95_s": wall, "audio_s_per_s": audio / wall, "wall_s": wall}


def _sync(backend: Any) -> None:
    import torch

    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def run(args: argparse.Namespace) -> int:
    import torch

    from chorus.models.qwen3.backend import Qwen3Backend
    from chorus.models.qwen3.tiny import build_tiny_model

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    streams = sorted({int(v) for v in args.streams.split(",") if v.strip()})
    with tempfile.TemporaryDirectory(prefix="chorus-qwen3-") as tmp:
        path = build_tiny_model(Path(tmp) / "model", kind="custom_voice", shape=args.shape, dtype=dtype)
        backend = Qwen3Backend(path, device=device, dtype=dtype, max_slots=max(streams), max_len=1024)
        _run_chorus(backend, 1, 4)  # warm-up (allocations, kernels)
        results: dict[str, dict[int, dict[str, float]]] = {"chorus": {}, "library": {}}
        for n in streams:
            results["chorus"][n] = _median([_run_chorus(backend, n, args.frames) for _ in range(args.repeats)])
            if not args.no_baseline:
                results["library"][n] = _median([_run_library(backend, n, args.frames) for _ in range(args.repeats)])
            print(_row(n, results), flush=True)
    _write(args, device, streams, results)
    return 0


def _row(n: int, results: dict[str, dict[int, dict[str, float]]]) -> str:
    c = results["chorus"][n]
    line = (
        f"N={n:3d} chorus: TTFA p50 {c['ttfa_p50_s']:.3f} s p95 {c['ttfa_p95_s']:.3f} s, "
        f"{c['audio_s_per_s']:.2f} audio-s/s, overhead {100 * c['overhead_ratio']:.1f}% of forward"
    )
    if n in results["library"]:
        b = results["library"][n]
        line += (
            f" | library generate(): first audio {b['ttfa_p95_s']:.3f} s, {b['audio_s_per_s']:.2f} audio-s/s"
            f" | TTFA ratio {c['ttfa_p95_s'] / b['ttfa_p95_s']:.2f}x, throughput ratio "
            f"{c['audio_s_per_s'] / b['audio_s_per_s']:.2f}x"
        )
    return line


def _write(args: argparse.Namespace, device: str, streams: list[int], results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"qwen3-{args.shape}-{device}"
    payload = {"shape": args.shape, "device": device, "frames": args.frames, "streams": streams, "results": results}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for system, rows in results.items():
        if rows:
            ns = sorted(rows)
            ax1.plot(ns, [rows[n]["ttfa_p95_s"] for n in ns], marker="o", label=system)
            ax2.plot(ns, [rows[n]["audio_s_per_s"] for n in ns], marker="o", label=system)
    ax1.set(xlabel="concurrent streams", ylabel="TTFA p95 (s)", xscale="log", title=f"Qwen3 {args.shape} on {device}")
    ax2.set(xlabel="concurrent streams", ylabel="audio-s per s", xscale="log")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus bench-qwen3", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
