"""Numbers of ``chorus bench-qwen3``: per-run metrics, min/median/max over repeats, within-repeat ratios, JSON + PNG.

Runs of different systems are interleaved (chorus, baseline, chorus, baseline, ...) so that a slow patch of a
shared machine hits both; a ratio is therefore computed within each repeat (chorus's run against the baseline's
run of the same repeat) and reported as the median and range of those ratios.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FRAME_SECONDS = 1920 / 24_000  # Qwen3-TTS 12 Hz: 80 ms of audio per codec frame
# Per-run metrics: name → whether lower is better (for the ratio's wording only).
METRICS = {
    "step_ms_p50": True,
    "first_audio_p50_s": True,
    "first_audio_p95_s": True,
    "audio_s_per_s": False,
}


@dataclass(frozen=True, slots=True)
class RunResult:
    """One system's run of N concurrent requests."""

    step_s: Sequence[float]  # wall time of every step (empty for the library's one-shot generate())
    first_audio_s: Sequence[float]  # per request: from submission to its first audio
    frames: Sequence[int]  # per request: codec frames generated
    delivered_samples: int  # samples handed to the caller (vTTS drops some at chunk boundaries)
    wall_s: float
    forward_s: float | None = None  # chorus with --forward-times: seconds inside model forwards (synchronised)

    def metrics(self) -> dict[str, float]:
        generated = sum(self.frames) * FRAME_SECONDS
        return {
            "step_ms_p50": _pct([1000 * s for s in self.step_s], 50),
            "step_ms_p90": _pct([1000 * s for s in self.step_s], 90),
            "first_audio_p50_s": _pct(list(self.first_audio_s), 50),
            "first_audio_p95_s": _pct(list(self.first_audio_s), 95),
            # Generated audio per wall second: the same work on both sides (the frames are checked equal).
            "audio_s_per_s": generated / self.wall_s if self.wall_s > 0 else math.nan,
            "delivered_audio_s_per_s": self.delivered_samples / 24_000 / self.wall_s if self.wall_s > 0 else math.nan,
            "wall_s": self.wall_s,
            "num_steps": float(len(self.step_s)),
            # Engine and glue time outside the model forwards, relative to them.
            "overhead_ratio": (sum(self.step_s) - self.forward_s) / self.forward_s if self.forward_s else math.nan,
        }


def _pct(values: list[float], pct: float) -> float:
    return float(np.percentile(np.asarray(values), pct)) if values else math.nan


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {"min": min(finite), "median": float(np.median(finite)), "max": max(finite)}


def summarize(runs: dict[str, dict[int, list[RunResult]]], reference: str = "chorus") -> dict[str, Any]:
    """runs[system][n] = results of the repeats, in run order. Returns per-system spreads of every metric and,
    for each other system, ratios reference/system computed within each repeat."""
    summary: dict[str, Any] = {"systems": {}, "ratios": {}, "frames_ok": {}}
    for system, by_n in runs.items():
        summary["systems"][system] = {}
        for n, results in by_n.items():
            per_run = [r.metrics() for r in results]
            summary["systems"][system][n] = {k: spread([m[k] for m in per_run]) for k in per_run[0]}
    if reference not in runs:
        return summary
    for system, by_n in runs.items():
        if system == reference:
            continue
        summary["ratios"][system] = {}
        for n, results in by_n.items():
            ours = runs[reference].get(n, [])
            pairs = list(zip(ours, results, strict=False))  # repeat i of ours with repeat i of theirs
            ratios = {}
            for metric in METRICS:
                values = [a.metrics()[metric] / b.metrics()[metric] for a, b in pairs if b.metrics()[metric]]
                ratios[metric] = spread(values)
            summary["ratios"][system][n] = ratios
            summary["frames_ok"].setdefault(n, {})[system] = all(list(a.frames) == list(b.frames) for a, b in pairs)
    return summary


def describe(n: int, summary: dict[str, Any], reference: str = "chorus") -> list[str]:
    """Human-readable lines for N streams: each system's medians (range), then each ratio."""
    lines = []
    for system, by_n in summary["systems"].items():
        if n not in by_n:
            continue
        s = by_n[n]
        lines.append(
            f"N={n:3d} {system:>8}: step p50 {_fmt(s['step_ms_p50'], 'ms', 1)}, first audio p50 "
            f"{_fmt(s['first_audio_p50_s'], 's', 3)} p95 {_fmt(s['first_audio_p95_s'], 's', 3)}, "
            f"{_fmt(s['audio_s_per_s'], 'audio-s/s', 2)}"
            + (f", overhead {_fmt(s['overhead_ratio'], 'x forward', 3)}" if s["overhead_ratio"]["median"] >= 0 else "")
        )
    for system, by_n in summary["ratios"].items():
        if n not in by_n:
            continue
        r = by_n[n]
        parts = ", ".join(f"{metric} {_fmt(r[metric], 'x', 2)}" for metric in METRICS)
        same = summary["frames_ok"].get(n, {}).get(system)
        lines.append(f"      {reference}/{system}: {parts}" + ("" if same else "  [frame counts differ!]"))
    return lines


def _fmt(s: dict[str, float], unit: str, digits: int) -> str:
    if not math.isfinite(s["median"]):
        return "n/a"
    return f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def write(stem: Path, payload: dict[str, Any], summary: dict[str, Any], title: str) -> tuple[Path, Path]:
    """JSON (conditions, raw runs, summary) and a PNG: step time, first audio and throughput against N."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
    data = json.loads(json.dumps({**payload, "summary": summary}, default=_json_default))
    json_path.write_text(json.dumps(_no_nan(data), indent=2, allow_nan=False) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("step_ms_p50", "step p50 (ms)"), ("first_audio_p50_s", "first audio p50 (s)"),
              ("audio_s_per_s", "audio-s per s")]  # fmt: skip
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for system, by_n in summary["systems"].items():
            ns = sorted(n for n in by_n if math.isfinite(by_n[n][metric]["median"]))
            if not ns:
                continue
            med = [by_n[n][metric]["median"] for n in ns]
            low = [by_n[n][metric]["median"] - by_n[n][metric]["min"] for n in ns]
            high = [by_n[n][metric]["max"] - by_n[n][metric]["median"] for n in ns]
            ax.errorbar(ns, med, yerr=[low, high], marker="o", capsize=3, label=system)
        all_ns = sorted({n for by_n in summary["systems"].values() for n in by_n})
        ax.set(xlabel="concurrent streams", ylabel=label, xscale="log")
        ax.set_xticks(all_ns, [str(n) for n in all_ns])
        ax.minorticks_off()
    axes[0].set_title(title, fontsize=9, loc="left")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return json_path, png_path


def _no_nan(value: Any) -> Any:
    """NaN (a metric a system does not have, e.g. the library's step time) as JSON null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, RunResult):
        return {
            "step_s": list(value.step_s),
            "first_audio_s": list(value.first_audio_s),
            "frames": list(value.frames),
            "delivered_samples": value.delivered_samples,
            "wall_s": value.wall_s,
            "forward_s": value.forward_s,
            "metrics": value.metrics(),
        }
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
