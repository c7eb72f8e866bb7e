"""Writing the quality gate's results: JSON (everything, per sentence), markdown (the figures side by side, each
bound with pass/fail) and a PNG (per-sentence distortion and similarity against the bounds)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chorus.bench.quality_gate import GateReport
from chorus.bench.quality_metrics import MCEP_ORDER


@dataclass(frozen=True)
class Timing:
    """Core-seconds per audio-second of one system (min/median/max over interleaved repeats)."""

    name: str
    per_audio_second: tuple[float, float, float]
    audio_seconds: float
    repeats: int


@dataclass
class QualityRun:
    """One ``bench-quality`` run: the gate's report for the candidate, other comparisons scored the same way
    (yardsticks), the timings, and the conditions."""

    candidate: str
    report: GateReport
    yardsticks: dict[str, GateReport] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)


DEFINITIONS = (
    f"MCD: mel-cepstral distortion, c1..c{MCEP_ORDER} of the WORLD envelope on a mel-warped axis (16 kHz, "
    "5 ms frames, α 0.42), (10/ln10)·sqrt(2·Σ Δc²) per frame, mean over speech frames (within 40 dB of the "
    "loudest), frame by frame (equal durations) or along a DTW path; per sentence, then mean/p95/max over "
    "sentences. Similarity: cosine of GE2E embeddings (chorus.voices.embedding) of candidate and reference. "
    "WER: corpus word error rate of each rendering's transcript against the text, same recogniser for both."
)


def to_json(run: QualityRun) -> dict[str, Any]:
    return {
        "candidate": run.candidate,
        "passed": run.report.passed,
        "gate": run.report.to_dict(),
        "yardsticks": {name: report.to_dict() for name, report in run.yardsticks.items()},
        "timings": [
            {
                "name": t.name,
                "core_s_per_audio_s": dict(zip(("min", "median", "max"), t.per_audio_second, strict=True)),
                "audio_seconds": t.audio_seconds,
                "repeats": t.repeats,
            }
            for t in run.timings
        ],
        "conditions": run.conditions,
    }


def render_markdown(run: QualityRun) -> str:
    reports: Mapping[str, GateReport] = {f"**{run.candidate}** vs reference": run.report, **run.yardsticks}
    verdict = "PASSES" if run.report.passed else "FAILS"
    lines = [f"### Quality gate: {run.candidate} {verdict}", ""]
    lines += [f"{k}: {v}" for k, v in run.conditions.items()]
    lines += ["", "| figure | bound | " + " | ".join(reports) + " |", "|---|---|" + "---|" * len(reports)]
    bounds = {c.name: c for c in run.report.checks()}
    rows: list[tuple[str, str | None, Callable[[GateReport], str]]] = [
        ("sentences", "sentences", lambda r: f"{len(r.sentences)}"),
        ("mean MCD (dB)", "mean MCD (dB)", lambda r: f"{r.mean_mcd_db:.3f}"),
        ("p95 MCD (dB)", "p95 MCD (dB)", lambda r: f"{r.p95_mcd_db:.3f}"),
        ("max MCD (dB)", None, lambda r: f"{r.max_mcd_db:.3f}"),
        ("mean speaker similarity", "mean speaker similarity", lambda r: f"{r.mean_similarity:.4f}"),
        ("min speaker similarity", "min speaker similarity", lambda r: f"{r.min_similarity:.4f}"),
        ("WER reference", None, lambda r: f"{100 * r.reference_wer:.1f} %"),
        ("WER candidate", None, lambda r: f"{100 * r.candidate_wer:.1f} %"),
        ("WER increase (abs.)", "WER increase (abs.)", lambda r: f"{100 * r.wer_increase:+.1f} pts"),
    ]
    for label, check_name, value in rows:
        check = bounds.get(check_name) if check_name else None
        bound = "" if check is None else _bound_text(check.name, check.bound, check.is_upper)
        cells = []
        for report in reports.values():
            cell = value(report)
            if check is not None and report is run.report:
                cell += " ✅" if check.passed else " ❌"
            cells.append(cell)
        lines.append(f"| {label} | {bound} | " + " | ".join(cells) + " |")
    if run.timings:
        lines += ["", "| system | core-s per audio-s (min / median / max) | audio s | repeats |", "|---|---|---|---|"]
        for t in run.timings:
            lo, mid, hi = t.per_audio_second
            lines.append(f"| {t.name} | {lo:.4f} / {mid:.4f} / {hi:.4f} | {t.audio_seconds:.1f} | {t.repeats} |")
    lines += ["", DEFINITIONS, ""]
    return "\n".join(lines)


def _bound_text(name: str, bound: float, is_upper: bool) -> str:
    sign = "≤" if is_upper else "≥"
    if name.startswith("WER"):
        return f"{sign} {100 * bound:+.1f} pts"
    if name == "sentences":
        return f"{sign} {bound:.0f}"
    return f"{sign} {bound:g}"


def print_checks(report: GateReport, label: str) -> None:
    for check in report.checks():
        status = "pass" if check.passed else "FAIL"
        sign = "<=" if check.is_upper else ">="
        print(f"  [{status}] {check.name}: {check.value:.4f} {sign} {check.bound:g}")
    print(f"quality gate for {label}: {'PASSED' if report.passed else 'FAILED'}")


def write_outputs(run: QualityRun, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(to_json(run), indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(run), encoding="utf-8")
    png = out_dir / f"{stem}.png"
    if write_plot(run, png):
        paths.append(png)
    return paths


def write_plot(run: QualityRun, path: Path) -> bool:
    """Per-sentence MCD and similarity of each comparison, with the bounds; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    reports = {run.candidate: run.report, **run.yardsticks}
    fig, (ax_mcd, ax_sim) = plt.subplots(1, 2, figsize=(11, 4))
    for name, report in reports.items():
        mcd = sorted(s.mcd_db for s in report.sentences)
        sim = sorted(s.similarity for s in report.sentences)
        ax_mcd.plot(range(1, len(mcd) + 1), mcd, marker=".", label=name)
        ax_sim.plot(range(1, len(sim) + 1), sim, marker=".", label=name)
    bounds = run.report.bounds
    ax_mcd.axhline(bounds.max_mean_mcd_db, color="k", ls="--", lw=0.8, label="bound: mean")
    ax_mcd.axhline(bounds.max_p95_mcd_db, color="r", ls=":", lw=0.8, label="bound: p95")
    ax_sim.axhline(bounds.min_mean_similarity, color="k", ls="--", lw=0.8, label="bound: mean")
    ax_sim.axhline(bounds.min_similarity, color="r", ls=":", lw=0.8, label="bound: min")
    ax_mcd.set(title="mel-cepstral distortion per sentence", xlabel="sentence (sorted)", ylabel="dB")
    ax_sim.set(title="speaker similarity per sentence", xlabel="sentence (sorted)", ylabel="cosine")
    for ax in (ax_mcd, ax_sim):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
