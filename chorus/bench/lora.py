"""``chorus bench-lora``: what serving many fine-tuned (LoRA) voices in one batch costs per step.

One Base model of ``--shape`` (random weights; the tiny test model by default, the 0.6B / 1.7B shapes for real
FLOPs) and ``--batch`` rows stepping together, in these configurations:

- ``none``: no row has an adapter (the gathered path is skipped: the plain model);
- ``merged``: one adapter merged into the weights, no row bound to an adapter (what a one-voice server runs);
- ``k=1``, ``k=4``, ``k=16``: the rows spread evenly over k distinct adapters, through the gathered delta.

Each repeat runs every configuration once, interleaved (none, merged, k=1, …, none, merged, …); a run is the median
time of the talker and code-predictor forwards per step (what adapters change; synchronised on a GPU) over
``--steps`` steps after two warm-up steps, and the ratios to ``none`` and to ``merged`` are taken within each repeat.
Reported: min / median / max over repeats. Also measured: an adapter's size, and a cold adapter's load time split
into parsing the stored bytes (off the engine thread) and installing it into the device pool (on the engine
thread, between steps). Writes ``lora-<shape>-<device>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from chorus.bench.qwen3_report import spread

CONFIGS_K = (1, 4, 16)
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", choices=["tiny", "0.6b", "1.7b"], default="tiny", help="random Base model to build")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--batch", type=int, default=16, help="rows stepping together")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of every adapter")
    p.add_argument("--steps", type=int, default=12, help="timed steps per run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of every configuration")
    p.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="also time this many LoRA training steps (batch 2, rank --rank) on this shape: what a fine-tune costs",
    )
    p.add_argument("--out", default="bench/results", help="folder for lora-<shape>-<device>.json and .png")


def run(args: argparse.Namespace) -> int:
    import torch

    from chorus.models.base import ReferenceVoice
    from chorus.models.qwen3.backend import SAMPLE_RATE, Qwen3Backend
    from chorus.testing.qwen3_tiny import build_tiny_model

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.set_num_threads(args.threads)
    ks = [k for k in CONFIGS_K if k <= args.batch]
    with tempfile.TemporaryDirectory(prefix="chorus-lora-") as tmp:
        path = build_tiny_model(Path(tmp) / "model", kind="base", shape=args.shape, dtype=dtype)
        backend = Qwen3Backend(
            path, device=device, dtype=dtype, max_slots=args.batch, max_len=1024, max_adapters=max(ks) + 1
        )
        audio = _reference_audio(SAMPLE_RATE)
        backend.load_voice("plain", backend.build_voice(ReferenceVoice("plain", audio, SAMPLE_RATE, None, "english")))
        adapters = [_random_adapter(backend, seed, args.rank) for seed in range(max(ks))]
        for i, blob in enumerate(adapters):
            ref = ReferenceVoice(f"v{i}", audio, SAMPLE_RATE, None, "english")
            backend.load_voice(f"v{i}", backend.build_lora_voice(ref, blob))
        configs: dict[str, Any] = {"none": lambda: _run_batch(backend, ["plain"] * args.batch, args.steps)}
        configs["merged"] = lambda: _with_merged(backend, adapters[0], args.batch, args.steps)
        for k in ks:
            voices = [f"v{i % k}" for i in range(args.batch)]
            configs[f"k={k}"] = lambda voices=voices: _run_batch(backend, voices, args.steps)
        for run_one in configs.values():
            run_one()  # warm-up: allocations, the pool's first installs
        runs: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, run_one in configs.items():
                runs[name].append(run_one())
        load = _load_times(backend, adapters, device)
        training = _train_times(args, Path(tmp)) if args.train_steps > 0 else None
    report = _report(args, device, runs, load, len(adapters[0]))
    report["training"] = training
    _print(report)
    _write(Path(args.out) / f"lora-{args.shape}-{device}", report)
    return 0


def _reference_audio(rate: int) -> Any:
    import numpy as np

    t = np.arange(rate * 3) / rate
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 3 * t)) / rate
    return np.asarray(sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2, dtype=np.float32)


def _random_adapter(backend: Any, seed: int, rank: int) -> bytes:
    import torch

    from chorus.models.qwen3.adapter import save_adapter

    g = torch.Generator().manual_seed(seed)
    weights = {}
    for path, layer in backend.adapters.layers.items():
        out_f, in_f = layer.base.weight.shape
        weights[path] = (torch.randn(rank, in_f, generator=g) / in_f**0.5, torch.randn(out_f, rank, generator=g) * 0.01)
    return save_adapter(weights, rank=rank, alpha=2.0 * rank, base=backend.digest)


def _sync(backend: Any) -> None:
    import torch

    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)


def _run_batch(backend: Any, voices: list[str], steps: int) -> float:
    """Median seconds per step of one batch of len(voices) rows (frame budget high enough never to end), counting
    the talker and code-predictor forwards only (the codec's decoding is the same whatever the adapters)."""
    from chorus.models.base import SpeechInput, SynthesisParams

    params = SynthesisParams(temperature=0.9, top_k=50, language="english", seed=1)
    inputs = [SpeechInput(f"r{i}", TEXT, v, params) for i, v in enumerate(voices)]
    slots = backend.prefill([(inp, backend.preprocess(inp)) for inp in inputs])
    times = []
    backend.forward_seconds = {}
    try:
        for i in range(steps + 2):
            running = [s for s in slots if not s.is_finished]
            before = _model_seconds(backend)
            backend.step(running)
            if i >= 2:
                times.append(_model_seconds(backend) - before)
    finally:
        backend.forward_seconds = None
        for slot in slots:
            backend.release(slot)
    return statistics.median(times)


def _model_seconds(backend: Any) -> float:
    spent = backend.forward_seconds
    return float(spent.get("talker", 0.0) + spent.get("code_predictor", 0.0))


def _with_merged(backend: Any, blob: bytes, batch: int, steps: int) -> float:
    """The batch on weights with one adapter merged in (restored exactly afterwards)."""
    import torch

    from chorus.models.qwen3.adapter import load_adapter

    adapter = load_adapter(blob)
    saved = {}
    with torch.no_grad():
        for path, layer in backend.adapters.layers.items():
            saved[path] = layer.base.weight.detach().clone()
            layer.base.weight += adapter.delta(path).to(layer.base.weight.device, layer.base.weight.dtype)
    try:
        return _run_batch(backend, ["plain"] * batch, steps)
    finally:
        with torch.no_grad():
            for path, layer in backend.adapters.layers.items():
                layer.base.weight.copy_(saved[path])


def _load_times(backend: Any, adapters: list[bytes], device: str) -> dict[str, Any]:
    """A cold adapter: parsing its stored bytes, then installing it into a free device entry."""
    from chorus.models.qwen3.adapter import load_adapter

    parse, install = [], []
    for i, blob in enumerate(adapters[:8]):
        t0 = time.perf_counter()
        parsed = load_adapter(blob, base=backend.digest)
        parse.append(time.perf_counter() - t0)
        backend.adapters.evict(f"v{i}")
        _sync(backend)
        t0 = time.perf_counter()
        index = backend.adapters.acquire(f"cold{i}", parsed)
        _sync(backend)
        install.append(time.perf_counter() - t0)
        backend.adapters.release(index)
        backend.adapters.evict(f"cold{i}")
    return {"parse_s": spread(parse), "install_s": spread(install), "count": len(parse)}


def _train_times(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Seconds per training step (the worker's trainer, on this machine's CPU threads) after one warm-up step."""
    from chorus.bench.finetune_load import prepare
    from chorus.finetune.qwen3_samples import load_examples
    from chorus.finetune.qwen3_train import LoraTrainer, TrainConfig

    model, examples = prepare(args.shape, root / "train")
    times: list[float] = []
    last = [time.perf_counter()]

    def step_done(event: Any) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    config = TrainConfig(steps=args.train_steps + 1, rank=args.rank, alpha=2.0 * args.rank, num_threads=args.threads)
    trainer = LoraTrainer(model, config, load_examples(examples))
    last[0] = time.perf_counter()
    trainer.run(on_step=step_done)
    per_step = times[1:] or times
    return {"steps": len(per_step), "step_s": spread(per_step), "batch_size": config.batch_size, "device": "cpu"}


def _report(
    args: argparse.Namespace, device: str, runs: dict[str, list[float]], load: dict[str, Any], size: int
) -> dict[str, Any]:
    ratios: dict[str, dict[str, Any]] = {}
    for name, times in runs.items():
        ratios[name] = {
            "vs_none": spread([t / n for t, n in zip(times, runs["none"], strict=True)]),
            "vs_merged": spread([t / m for t, m in zip(times, runs["merged"], strict=True)]),
        }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "settings": {k: getattr(args, k) for k in ("shape", "batch", "rank", "steps", "repeats", "threads")},
        "machine": {"device": device, "cpus": os.cpu_count(), "platform": platform.platform(), "commit": commit},
        "step_s": {name: {**spread(times), "runs": times} for name, times in runs.items()},
        "ratios": ratios,
        "adapter_bytes": size,
        "load": load,
    }


def _print(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nbench-lora: {s['shape']} Base on {report['machine']['device']}, {s['batch']} rows, rank {s['rank']}, "
        f"talker + code-predictor ms per step (median of {s['steps']}), {s['repeats']} interleaved repeats "
        f"(commit {report['machine']['commit']})"
    )
    print(f"{'config':<8} {'step ms min/med/max':>24} {'x none (range)':>22} {'x merged (range)':>22}")
    for name, st in report["step_s"].items():
        r = report["ratios"][name]
        print(
            f"{name:<8} {st['min'] * 1e3:7.2f}/{st['median'] * 1e3:7.2f}/{st['max'] * 1e3:7.2f} "
            f"{_ratio(r['vs_none']):>22} {_ratio(r['vs_merged']):>22}"
        )
    training = report.get("training")
    if training:
        step = training["step_s"]["median"]
        print(
            f"training (CPU, {report['settings']['threads']} threads, batch {training['batch_size']}): "
            f"{step:.2f} s/step median of {training['steps']} "
            f"({training['step_s']['min']:.2f}-{training['step_s']['max']:.2f}); 500 steps = {500 * step / 3600:.2f} h"
        )
    load = report["load"]
    print(
        f"adapter: {report['adapter_bytes'] / 1e6:.2f} MB; cold load = parse {load['parse_s']['median'] * 1e3:.1f} ms "
        f"(off the engine thread) + install {load['install_s']['median'] * 1e3:.1f} ms (between steps), "
        f"medians of {load['count']}"
    )


def _ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def _write(stem: Path, report: dict[str, Any]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.png"  # "0.6b": no suffix
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {stem}.json (no matplotlib: no plot)")
        return
    names = list(report["step_s"])
    med = [report["step_s"][n]["median"] * 1e3 for n in names]
    low = [m - report["step_s"][n]["min"] * 1e3 for m, n in zip(med, names, strict=True)]
    high = [report["step_s"][n]["max"] * 1e3 - m for m, n in zip(med, names, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, med, yerr=[low, high], capsize=4, color=["#888", "#888"] + ["#3a7"] * (len(names) - 2))
    s = report["settings"]
    ax.set_ylabel("step time, ms (median; bars: min-max)")
    ax.set_title(f"multi-LoRA: {s['shape']} Base, {s['batch']} rows, rank {s['rank']}, {report['machine']['device']}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    print(f"wrote {stem}.json and {stem}.png")
