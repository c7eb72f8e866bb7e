"""``chorus bench-qwen3``: the Qwen3-TTS engine against vTTS's library and the library's own ``generate()``.

The model is a checkpoint folder (``--model-path``; ``--save-tiny FOLDER`` writes the tiny random one) or, by
default, a random-weight model built in a temp folder with the shapes of Qwen3-TTS-12Hz-1.7B / -0.6B
(``tiny.SHAPES``; the same FLOPs per frame as the real model) or the tiny test model. For each number of
concurrent streams N, every system generates the same N requests (same texts, speakers, language, frames):

- chorus: N requests submitted at once to the engine (continuous batching, streaming chunks of
  ``--first-emit-frames``, then ``--emit-every-frames`` growing to ``--max-emit-frames``), seeded sampling
  (temperature 0.9, top-k 50; ``--greedy`` for argmax);
- vTTS (``--vtts-python``, optional): caimari/vtts's ``ContinuousWorker`` in its own venv (``vtts_driver.py``),
  one chunk every ``--emit-every-frames``, its own hard-coded sampling;
- library (unless ``--no-library``): ``Qwen3TTSModel.generate_custom_voice`` on the whole batch (no streaming:
  its first audio is its last).

Repeats run interleaved (chorus, vTTS, library, chorus, ...), all warm, with torch on ``--threads`` threads on
both sides. Reported per system: the step time (median over a run's steps), first audio per request (p50/p95),
audio-seconds generated per wall-second — each as min/median/max over repeats — and chorus's ratio to each
baseline computed within each repeat (median and range). A random talker practically never says EOS, so each
request makes exactly ``--frames`` frames; the frame counts are recorded and compared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from chorus.bench.corpus import text_for
from chorus.bench.qwen3_report import RunResult, describe, summarize, write

SPEAKERS = ["aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian"]
LANGUAGE = "english"
SAMPLES_PER_FRAME = 1920


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", choices=["tiny", "0.6b", "1.7b"], default="tiny", help="random model to build")
    p.add_argument("--model-path", type=Path, help="a CustomVoice checkpoint folder instead of a random model")
    p.add_argument("--save-tiny", type=Path, metavar="FOLDER", help="write the --shape random model there, exit")
    p.add_argument("--label", help="name in the output files (default: the shape or the folder's name)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (both sides)")
    p.add_argument("--streams", default="4,8", help="concurrent streams (comma-separated)")
    p.add_argument("--frames", type=int, default=60, help="frames per request (80 ms each)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per N")
    p.add_argument("--first-emit-frames", type=int, default=6, help="chorus's first chunk (vTTS: 6)")
    p.add_argument("--emit-every-frames", type=int, default=6, help="chorus's second chunk; vTTS's every chunk")
    p.add_argument("--max-emit-frames", type=int, default=None, help="chorus's chunk cap (default: 4x every)")
    p.add_argument("--greedy", action="store_true", help="chorus and the library greedy (vTTS always samples)")
    p.add_argument("--vtts-python", help="python of a venv with vTTS + its qwen-tts fork: adds the vTTS baseline")
    p.add_argument("--no-library", "--no-baseline", action="store_true", help="skip the library generate()")
    p.add_argument(
        "--forward-times",
        action="store_true",
        help="also report chorus's time outside the model forwards (synchronises each forward: slower on a GPU)",
    )
    p.add_argument(
        "--gate",
        choices=["bfloat16", "float16"],
        help="instead of timing: this precision against float32 through the audio-quality gate (qwen3_gate.py)",
    )
    p.add_argument("--gate-sentences", type=int, default=50, help="held-out sentences for --gate (the gate needs 50)")
    p.add_argument("--out", default="bench/results", help="folder for qwen3-<label>-<device>[-vtts].json and .png")


def run(args: argparse.Namespace) -> int:
    import torch

    from chorus.testing.qwen3_tiny import build_tiny_model

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if args.save_tiny:
        path = build_tiny_model(args.save_tiny, kind="custom_voice", shape=args.shape, dtype=dtype)
        print(f"wrote a random {args.shape} CustomVoice model to {path}")
        return 0
    torch.set_num_threads(args.threads)
    streams = sorted({int(v) for v in args.streams.split(",") if v.strip()})
    with tempfile.TemporaryDirectory(prefix="chorus-qwen3-") as tmp:
        if args.model_path:
            path, label = args.model_path, args.label or args.model_path.name
        else:
            path = build_tiny_model(Path(tmp) / "model", kind="custom_voice", shape=args.shape, dtype=dtype)
            label = args.label or args.shape
        if args.gate:
            from chorus.bench.qwen3_gate import run_gate

            return run_gate(args, path, label, device)
        return _bench(args, path, label, device, dtype, streams)


def _bench(args: argparse.Namespace, path: Path, label: str, device: str, dtype: Any, streams: list[int]) -> int:
    from chorus.bench.qwen3_vtts import VttsBaseline
    from chorus.models.qwen3.backend import Qwen3Backend

    backend = Qwen3Backend(
        path,
        device=device,
        dtype=dtype,
        max_slots=max(streams),
        max_len=1024,
        first_emit_frames=args.first_emit_frames,
        emit_every_frames=args.emit_every_frames,
        max_emit_frames=args.max_emit_frames,
    )
    systems: dict[str, Any] = {
        "chorus": lambda n: _run_chorus(backend, n, args.frames, args.greedy, args.forward_times)
    }
    vtts = None
    if args.vtts_python:
        vtts = VttsBaseline(
            args.vtts_python,
            path,
            threads=args.threads,
            max_slots=max(streams),
            emit_every_frames=args.emit_every_frames,
            device=device,
        )
        systems["vtts"] = lambda n: _run_vtts(vtts, n, args.frames)
    else:
        print("vTTS baseline skipped: pass --vtts-python /path/to/venv/bin/python to add it (see README)")
    if not args.no_library:
        systems["library"] = lambda n: _run_library(backend, n, args.frames, args.greedy)
    load_before = os.getloadavg()
    try:
        for run_one in systems.values():
            run_one(1)  # warm-up (allocations, kernels, the driver's first run)
        runs: dict[str, dict[int, list[RunResult]]] = {name: {} for name in systems}
        for n in streams:
            for _ in range(args.repeats):
                for name, run_one in systems.items():
                    runs[name].setdefault(n, []).append(run_one(n))
            summary = summarize(runs)
            print("\n".join(describe(n, summary)), flush=True)
    finally:
        if vtts is not None:
            vtts.close()
    conditions = _conditions(args, path, device, dtype, backend, vtts.info if vtts else None)
    # A shared machine's load explains a noisy run (1-minute averages, before and after).
    conditions["load_average"] = {"before": load_before[0], "after": os.getloadavg()[0], "cpus": os.cpu_count()}
    stem = Path(args.out) / f"qwen3-{label}-{device}{'-vtts' if vtts else ''}"
    title = f"Qwen3 {label} on {device}, {args.threads} threads, {args.frames} frames, {args.repeats} repeats"
    json_path, png_path = write(stem, {"conditions": conditions, "runs": runs}, summarize(runs), title)
    print(f"wrote {json_path} and {png_path}")
    return 0


def _requests(n: int) -> tuple[list[str], list[str]]:
    return [text_for(i) for i in range(n)], [SPEAKERS[i % len(SPEAKERS)] for i in range(n)]


def _run_chorus(backend: Any, n: int, frames: int, greedy: bool, forward_times: bool) -> RunResult:
    from chorus.engine.config import EngineConfig
    from chorus.engine.engine import Engine
    from chorus.engine.request import Request, RequestOutput
    from chorus.models.base import SpeechInput, SynthesisParams

    engine = Engine(backend, EngineConfig(max_slots=n, queue_limit=n, max_frames=frames))
    texts, speakers = _requests(n)
    first: dict[str, float] = {}
    samples: dict[str, int] = {}
    t0 = time.perf_counter()
    for i, (text, speaker) in enumerate(zip(texts, speakers, strict=True)):
        rid = f"r{i}"
        samples[rid] = 0

        def sink(out: RequestOutput, rid: str = rid) -> None:
            if out.audio.size and rid not in first:
                first[rid] = time.perf_counter() - t0
            samples[rid] += out.audio.size

        params = SynthesisParams(temperature=0.0 if greedy else 0.9, top_k=50, seed=i, language=LANGUAGE)
        inp = SpeechInput(rid, text, speaker, params)
        engine.add_request(Request(inp, sink, prepared=backend.preprocess(inp)))
    steps = []
    backend.forward_seconds = {} if forward_times else None
    while engine.has_work():
        s0 = time.perf_counter()
        engine.step()
        steps.append(time.perf_counter() - s0)
    wall = time.perf_counter() - t0
    forward = sum(backend.forward_seconds.values()) if forward_times else None
    backend.forward_seconds = None
    return RunResult(
        step_s=steps,
        first_audio_s=[first.get(f"r{i}", float("nan")) for i in range(n)],
        frames=[samples[f"r{i}"] // SAMPLES_PER_FRAME for i in range(n)],
        delivered_samples=sum(samples.values()),
        wall_s=wall,
        forward_s=forward,
    )


def _run_vtts(vtts: Any, n: int, frames: int) -> RunResult:
    texts, speakers = _requests(n)
    out = vtts.run(texts, speakers, frames=frames, language=LANGUAGE, seed=0)
    return RunResult(
        step_s=out["step_s"],
        first_audio_s=out["first_audio_s"],
        frames=out["frames"],
        delivered_samples=sum(out["samples"]),
        wall_s=out["wall_s"],
    )


def _run_library(backend: Any, n: int, frames: int, greedy: bool) -> RunResult:
    import torch

    texts, speakers = _requests(n)
    t0 = time.perf_counter()
    with torch.inference_mode():
        wavs, _ = backend.tts.generate_custom_voice(
            text=texts,
            speaker=speakers,
            language=[LANGUAGE] * n,
            max_new_tokens=frames + 1,
            do_sample=not greedy,
            subtalker_dosample=not greedy,
        )
    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)
    wall = time.perf_counter() - t0
    return RunResult(
        step_s=[],
        first_audio_s=[wall] * n,
        frames=[len(w) // SAMPLES_PER_FRAME for w in wavs],
        delivered_samples=sum(len(w) for w in wavs),
        wall_s=wall,
    )


def _conditions(
    args: argparse.Namespace, path: Path, device: str, dtype: Any, backend: Any, vtts: dict[str, Any] | None
) -> dict[str, Any]:
    import torch

    return {
        "model": str(path),
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": args.threads,
        "frames": args.frames,
        "repeats": args.repeats,
        "interleaved": True,
        "language": LANGUAGE,
        "speakers": "SPEAKERS[i % 9]",
        "texts": "chorus.bench.corpus.text_for(i)",
        "chorus": {
            "sampling": "greedy" if args.greedy else "temperature 0.9, top-k 50, repetition penalty 1.05, seed i",
            "first_emit_frames": backend.first_emit_frames,
            "emit_every_frames": backend.emit_every_frames,
            "max_emit_frames": backend.max_emit_frames,
            "torch": torch.__version__,
        },
        "vtts": None
        if vtts is None
        else {
            "sampling": "its own: talker temperature 0.9 / top-k 50, code predictor 1.0 / top-k 50; torch seed 0",
            "emit_every_frames": args.emit_every_frames,
            "stop_ids": "none (every request runs --frames frames)",
            "torch": vtts.get("torch"),
            "threads": vtts.get("threads"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus bench-qwen3", description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
