"""``chorus bench-voices`` output: one table per speaker set, the first-chunk latency line, the plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METHODS = ("floor", "baseline", "fallback", "ours", "ceiling")
CONVERTED = ("ours", "fallback")  # the methods whose cost is reported


@dataclass(frozen=True, slots=True)
class SpeakerResult:
    name: str
    sex: str
    family: str
    similarity: dict[str, float]  # per method: cosine similarity to the held-out clip
    rtf: dict[str, float]  # converted methods: wall seconds per second of audio, one thread, median
    fit_s: dict[str, float]  # converted methods: seconds to fit at registration
    warp: dict[str, float]  # converted methods: the fitted (or fixed) frequency warp


def mean_similarity(results: Sequence[SpeakerResult]) -> dict[str, float]:
    return {m: round(float(np.mean([r.similarity[m] for r in results])), 4) for m in METHODS}


def render_table(results: Sequence[SpeakerResult]) -> str:
    header = (
        "| speaker | sex | " + " | ".join(METHODS) + " | RTF ours | RTF fallback | fit ours (s) | fit fallback (s) |"
    )
    lines = [header, "|" + "---|" * (len(METHODS) + 6)]
    rows = [(r.name, r.sex, r.similarity, r.rtf, r.fit_s) for r in results]
    rows.append(
        (
            "**mean**",
            "",
            {m: float(np.mean([r.similarity[m] for r in results])) for m in METHODS},
            {m: float(np.mean([r.rtf[m] for r in results])) for m in CONVERTED},
            {m: float(np.mean([r.fit_s[m] for r in results])) for m in CONVERTED},
        )
    )
    for name, sex, sim, rtf, fit in rows:
        cells = [sex] + [f"{sim[m]:.3f}" for m in METHODS]
        cells += [f"{rtf['ours']:.3f}", f"{rtf['fallback']:.3f}", f"{fit['ours']:.2f}", f"{fit['fallback']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_latency(latency: Mapping[str, Mapping[str, float]]) -> str:
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


SET_TITLES = {
    "dev": "Development set (all tuning happens here)",
    "test": "Test set (never tuned on: other speakers, other recordings and texts)",
}


def render_markdown(
    results: Mapping[str, Sequence[SpeakerResult]], latency: Mapping[str, Mapping[str, float]], command: str
) -> str:
    parts = [
        "# Voice conversion quality (resemblyzer similarity to a held-out target clip)",
        f"`{command}`; RTF: streaming conversion, one thread, median of repeats; fit: seconds to fit at "
        "registration. The speaker sets and their texts are listed in `chorus/bench/voice_speakers.py`.",
    ]
    for name, rows in results.items():
        parts += [f"## {SET_TITLES.get(name, name)}", render_table(rows)]
    if latency:
        parts.append(render_latency(latency))
    return "\n\n".join(parts) + "\n"


def write_plot(results: Mapping[str, Sequence[SpeakerResult]], path: Path) -> None:
    """One panel per set: each method's similarity per speaker and the set's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [len(rows) + 1 for rows in results.values()]
    fig, axes = plt.subplots(
        1, len(results), figsize=(max(8, 1.2 * sum(sizes)), 4.8), gridspec_kw={"width_ratios": sizes}, squeeze=False
    )
    width = 0.8 / len(METHODS)
    for ax, (set_name, rows) in zip(axes[0], results.items(), strict=True):
        names = [r.name for r in rows] + ["mean"]
        for i, method in enumerate(METHODS):
            values = [r.similarity[method] for r in rows]
            values.append(float(np.mean(values)))
            ax.bar(np.arange(len(names)) + (i - (len(METHODS) - 1) / 2) * width, values, width, label=method)
        ax.set_xticks(np.arange(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0.3, 1.08)  # headroom for the legend
        ax.set_title(SET_TITLES.get(set_name, set_name), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("resemblyzer cosine similarity to a held-out clip")
    axes[0][0].legend(ncol=len(METHODS), fontsize=7, loc="upper left")
    fig.suptitle("Piper voice conversion towards each target speaker")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
