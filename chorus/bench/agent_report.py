"""``chorus bench-agent``'s arithmetic and output: per-session metrics from what a client recorded, the summary
over interleaved repeats, the markdown and the plot. Pure: no I/O but the files written at the end.

Every time here is on the client's event-loop clock (seconds); a session's recording is a :class:`Trace`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chorus.bench.player import simulate
from chorus.bench.workloads import percentile

SYSTEMS = ("chorus", "baseline")
LABELS = {
    "chorus": "chorus (one WebSocket session)",
    "baseline": "baseline (a POST per sentence)",
}
CLAUSE_GOAL_S = 0.3
BARGE_IN_GOAL_S = 0.1


@dataclass
class Trace:
    """What one session's client saw. ``pieces``: (arrival time, stream, bytes) of every audio piece; chorus has one
    stream (the session), the baseline one per sentence (its POST). ``ends``: when each stream ended."""

    system: str
    index: int  # the corpus text's index
    rate_tps: float
    clause_token: int  # the token that ends the first piece of text the system speaks (see agent.py)
    sentence_tokens: list[int]  # the token that ends each sentence
    sentence_words: list[int]  # words per sentence (chorus.timestamps.split_words)
    bytes_per_s: float
    sent: list[float] = field(default_factory=list)  # when each token was sent (only those sent)
    pieces: list[tuple[float, int, int]] = field(default_factory=list)
    ends: dict[int, float] = field(default_factory=dict)
    words: list[dict[str, Any]] = field(default_factory=list)  # chorus: response.timestamps words, in order
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    requests_ok: int = 0
    cancel_at: float | None = None  # barge-in sent (chorus: response.cancel; baseline: streams abandoned)
    done_at: float | None = None  # chorus: response.audio.done; baseline barge-in: every stream closed
    done_status: str | None = None


def contiguous(trace: Trace) -> list[tuple[float, float]]:
    """(time, seconds of audio playable in order) after each arrival: a stream's audio plays only once every
    stream before it has been played to its end, so only the in-order prefix of what arrived counts."""
    streams = sorted({s for _, s, _ in trace.pieces} | set(trace.ends))
    got = dict.fromkeys(streams, 0)
    events = sorted([(t, s, n) for t, s, n in trace.pieces] + [(t, s, -1) for s, t in trace.ends.items()])
    ended: set[int] = set()
    out: list[tuple[float, float]] = []
    last = 0
    for at, stream, size in events:
        if size < 0:
            ended.add(stream)
        else:
            got[stream] += size
        playable = 0
        for s in streams:
            playable += got[s]
            if s not in ended:
                break
        if playable > last:
            out.append((at, playable / trace.bytes_per_s))
            last = playable
    return out


def sentence_audio_at(trace: Trace) -> list[float | None]:
    """When each sentence's first audio arrived. Baseline: its POST's first byte. chorus: the arrival of the piece
    holding the sample where the sentence's first word starts (``start_s`` of its timestamp); None for all when the
    timestamps do not hold exactly the text's words."""
    if trace.system == "baseline":
        return [
            min((t for t, s, n in trace.pieces if s == k and n > 0), default=None)
            for k in range(len(trace.sentence_words))
        ]
    if len(trace.words) != sum(trace.sentence_words):
        return [None] * len(trace.sentence_words)
    samples_per_s = trace.bytes_per_s / 2  # s16le mono
    arrived: list[tuple[float, int]] = []  # (arrival, samples received up to and with this piece)
    total = 0
    for at, _, size in sorted(trace.pieces):
        total += size
        arrived.append((at, total // 2))
    out: list[float | None] = []
    first_word = 0
    for count in trace.sentence_words:
        sample = round(float(trace.words[first_word]["start_s"]) * samples_per_s)
        out.append(next((at for at, upto in arrived if upto > sample), None))
        first_word += count
    return out


def session_metrics(trace: Trace) -> dict[str, Any]:
    """One session's numbers (seconds). A session that got no audio has ``None`` latencies (counted as failed)."""
    audio = [(t, n) for t, _, n in trace.pieces if n > 0]
    first = min((t for t, _ in audio), default=None)
    sent = trace.sent

    def since(token: int) -> float | None:
        return None if first is None or token >= len(sent) else round(first - sent[token], 4)

    m: dict[str, Any] = {
        "index": trace.index,
        "rate_tps": round(trace.rate_tps, 1),
        "tokens_sent": len(sent),
        "requests": trace.requests,
        "requests_ok": trace.requests_ok,
        "errors": len(trace.errors),
        "error_samples": sorted(set(trace.errors))[:3],
        "audio_s": round(sum(n for _, n in audio) / trace.bytes_per_s, 3),
        "first_token_to_audio_s": since(0),
        "first_clause_to_audio_s": since(trace.clause_token),
        "done_status": trace.done_status,
    }
    if trace.cancel_at is None:
        at = sentence_audio_at(trace)
        m["sentence_to_audio_s"] = [
            round(a - sent[trace.sentence_tokens[k]], 4)
            if a is not None and trace.sentence_tokens[k] < len(sent)
            else None
            for k, a in enumerate(at)
        ][1:]
        play = simulate(contiguous(trace))
        m |= {"underruns": play.underruns, "stall_s": round(play.stall_s, 4)}
        return m
    cancel = trace.cancel_at
    late = [(t, n) for t, n in audio if t > cancel]
    m |= {
        "audio_before_cancel_s": round(sum(n for t, n in audio if t <= cancel) / trace.bytes_per_s, 3),
        "cancel_to_last_audio_s": round(max((t for t, _ in late), default=cancel) - cancel, 4),
        "audio_after_cancel_s": round(sum(n for _, n in late) / trace.bytes_per_s, 4),
        "pieces_after_cancel": len(late),
        "cancel_to_done_s": None if trace.done_at is None else round(trace.done_at - cancel, 4),
    }
    return m


def _pcts(values: list[float | None]) -> tuple[float | None, float | None]:
    """p50, p95 (nearest rank); a missing value (a failed session) counts as +inf, and a percentile on one is None."""
    vals = [math.inf if v is None else v for v in values]
    p50, p95 = percentile(vals, 50), percentile(vals, 95)
    return (p50 if p50 is None or math.isfinite(p50) else None, p95 if p95 is None or math.isfinite(p95) else None)


def run_numbers(run: dict[str, Any]) -> dict[str, float | None]:
    """One pass's figures: p50/p95 over its sessions (sentences pooled), counts summed."""
    s = run["sessions"]
    out: dict[str, float | None] = {
        "sessions": len(s),
        "errors": sum(x["errors"] for x in s),
        "requests": sum(x["requests"] for x in s),
        "requests_ok": sum(x["requests_ok"] for x in s),
        "audio_s": sum(x["audio_s"] for x in s),
    }
    for key in ("first_token_to_audio_s", "first_clause_to_audio_s"):
        out[f"{key}_p50"], out[f"{key}_p95"] = _pcts([x[key] for x in s])
    if run["kind"] == "stream":
        pooled = [v for x in s for v in x["sentence_to_audio_s"]]
        out["sentence_to_audio_s_p50"], out["sentence_to_audio_s_p95"] = _pcts(pooled)
        out["sentences_unmeasured"] = sum(v is None for v in pooled)
        out["underruns"] = sum(x["underruns"] for x in s)
        out["stall_s"] = sum(x["stall_s"] for x in s)
        out["sessions_with_underruns"] = sum(x["underruns"] > 0 for x in s)
        cpu, audio = run["server_cpu_s"], out["audio_s"]
        out["server_cpu_per_audio_s"] = cpu / audio if cpu is not None and audio else None
    else:
        for key in ("cancel_to_last_audio_s", "cancel_to_done_s"):
            out[f"{key}_p50"], out[f"{key}_p95"] = _pcts([x[key] for x in s])
        out["audio_after_cancel_s_max"] = max((x["audio_after_cancel_s"] for x in s), default=None)
        out["barge_ins"] = sum(x["cancel_to_done_s"] is not None for x in s)
        out["idle_after_s"] = run["idle_after_s"]
    return out


def spread(values: list[float | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"min": None, "median": None, "max": None, "runs": values}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "runs": values}


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, dict[str, dict[str, Any]]]:
    """{N: {system: {figure: min/median/max over repeats}}}; stream and barge-in passes' figures merged."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        out[str(n)] = {}
        for system in SYSTEMS:
            figures: dict[str, list[float | None]] = {}
            for run in runs:
                if run["n"] == n and run["system"] == system:
                    prefix = "" if run["kind"] == "stream" else "barge_"
                    for key, value in run_numbers(run).items():
                        figures.setdefault(prefix + key, []).append(value)
            out[str(n)][system] = {key: spread(values) for key, values in figures.items()}
    return out


ROWS: tuple[tuple[str, str, str], ...] = (
    # (figure, label, format); "s" = seconds, "n" = a count
    ("first_token_to_audio_s_p50", "first token → first audio, p50 (s)", "s"),
    ("first_token_to_audio_s_p95", "first token → first audio, p95 (s)", "s"),
    ("first_clause_to_audio_s_p50", "first clause end → first audio, p50 (s)", "s"),
    ("first_clause_to_audio_s_p95", "first clause end → first audio, p95 (s)", "s"),
    ("sentence_to_audio_s_p50", "sentence end → its audio (2nd+ sentences), p50 (s)", "s"),
    ("sentence_to_audio_s_p95", "sentence end → its audio (2nd+ sentences), p95 (s)", "s"),
    ("underruns", "playback underruns (all sessions)", "n"),
    ("stall_s", "playback stall, total (s)", "s"),
    ("sessions_with_underruns", "sessions with an underrun", "n"),
    ("audio_s", "audio received (s)", "a"),
    ("server_cpu_per_audio_s", "server CPU per second of audio (s)", "s"),
    ("requests", "requests sent (chorus: sessions; baseline: sentence POSTs)", "n"),
    ("requests_ok", "requests completed", "n"),
    ("errors", "errors", "n"),
    ("barge_cancel_to_last_audio_s_p50", "barge-in: cancel → last audio received, p50 (s)", "s"),
    ("barge_cancel_to_last_audio_s_p95", "barge-in: cancel → last audio received, p95 (s)", "s"),
    ("barge_cancel_to_done_s_p50", "barge-in: cancel → done / streams closed, p50 (s)", "s"),
    ("barge_cancel_to_done_s_p95", "barge-in: cancel → done / streams closed, p95 (s)", "s"),
    ("barge_audio_after_cancel_s_max", "barge-in: audio received after cancel, max (s)", "s"),
    ("barge_idle_after_s", "barge-in: last cancel → server idle (/v1/stats) (s)", "s"),
    ("barge_errors", "barge-in pass: errors", "n"),
)


def _cell(stat: dict[str, Any] | None, fmt: str) -> str:
    if stat is None or stat["median"] is None:
        return "-"
    spec = {"s": ".3f", "a": ".1f"}.get(fmt, "g")
    lo, mid, hi = (format(float(stat[k]), spec) for k in ("min", "median", "max"))
    return mid if lo == hi else f"{mid} ({lo}–{hi})"


def render_markdown(report: dict[str, Any]) -> str:
    s, m = report["settings"], report["machine"]
    out = [
        f"### chorus bench-agent, {report['started_at']}",
        "",
        f"`{report['command']}` — commit {m.get('commit') or '?'}; {m['usable_cpus']} CPU cores, "
        f"{m.get('cpu') or 'CPU not recorded'} (client and server share them), Python {m['python']}, "
        f"{m['platform']}; load average at start {m['loadavg_at_start'][0]:.2f}.",
        "",
        f"Server: `{report['server']['command']}` with {_settings_text(report['server']['config'])} (all else "
        "default). Each session: "
        f"a ~3-sentence paragraph of the bench corpus (no digits, different per session and repeat) sent as "
        f"~4-character LLM-like tokens at {s['token_rate_tps'][0]:g}–{s['token_rate_tps'][1]:g} tokens/s (drawn per "
        f"session, gamma-jittered gaps, seed {s['seed']}); N sessions start over {s['stagger_s']:g} s. voice "
        f"{s['voice']}, {s['sample_rate']} Hz s16le on both routes. Both systems get the same texts and token "
        f"schedules; per repeat and N the order alternates (chorus first, then baseline first). "
        f"{s['repeats']} repeat(s); cells: median (min–max) over repeats of the per-run figure.",
        "",
        *[f"- {line}" for line in report["definitions"]],
    ]
    for n, by_system in report["summary"].items():
        out += ["", f"**N = {n} concurrent sessions**", "", f"| figure | {LABELS['chorus']} | {LABELS['baseline']} |"]
        out.append("| --- | --- | --- |")
        for key, label, fmt in ROWS:
            cells = [_cell(by_system[system].get(key), fmt) for system in SYSTEMS]
            if cells != ["-", "-"]:
                out.append(f"| {label} | {cells[0]} | {cells[1]} |")
    out += ["", timestamps_markdown(report["timestamps"])]
    out += ["", *(f"- {note}" for note in report["notes"])]
    return "\n".join(out) + "\n"


def _settings_text(config: dict[str, Any], prefix: str = "") -> str:
    """{"server": {"output_sample_rate": 22050}} → "server.output_sample_rate: 22050"."""
    parts = [
        _settings_text(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}: {v}" for k, v in config.items()
    ]
    return ", ".join(parts)


def timestamps_markdown(ts: dict[str, Any]) -> str:
    head = (
        f"**Word timestamps vs forced alignment** ({ts['aligner']}): {ts['sentences_aligned']} of "
        f"{ts['sentences']} test-split sentences aligned, {ts['words']} words compared. "
        "Nothing was tuned on these sentences (the mapping from the aligner's 10 ms frames to seconds is fixed code)."
    )
    if not ts["words"]:
        return head + " No word could be compared."
    rows = [
        "| | end time | start time |",
        "| --- | --- | --- |",
        f"| mean absolute error (s) | {ts['end_mae_s']:.3f} | {ts['start_mae_s']:.3f} |",
        f"| median absolute error (s) | {ts['end_median_abs_s']:.3f} | {ts['start_median_abs_s']:.3f} |",
        f"| p90 absolute error (s) | {ts['end_p90_abs_s']:.3f} | {ts['start_p90_abs_s']:.3f} |",
        f"| mean signed error, chorus − aligner (s) | {ts['end_bias_s']:+.3f} | {ts['start_bias_s']:+.3f} |",
    ]
    gap = ts["gap_median_s"]
    if None not in gap.values():
        rows.append(
            f"\nMedian pause between consecutive words: chorus {gap['chorus']:.3f} s, aligner {gap['aligner']:.3f} s. "
            "chorus gives the pause at a word boundary to no word, the aligner to the words around it, so start "
            "times (after a pause) differ by about that much by convention; end times compare like with like."
        )
    failed = "; ".join(f"{f['sentence'][:40]}…: {f['reason']}" for f in ts["failed"])
    return "\n".join([head, "", *rows] + ([f"\nNot aligned: {failed}"] if failed else []))


def _values(report: dict[str, Any], kind: str, n: int, system: str, key: str) -> list[float]:
    """Every session's (or sentence's) ``key`` in the matching runs, repeats pooled; None (unmeasured) left out."""
    out: list[float] = []
    for run in report["runs"]:
        if run["kind"] == kind and run["n"] == n and run["system"] == system:
            for x in run["sessions"]:
                v = x[key]
                out += [u for u in v if u is not None] if isinstance(v, list) else [v] * (v is not None)
    return out


def write_plot(report: dict[str, Any], path: Path) -> None:
    """CDFs of first clause end → first audio and sentence end → its audio; the barge-in figures as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sizes: list[int] = report["settings"]["sessions"]
    cdfs = (
        ("first_clause_to_audio_s", "first clause end → first audio", CLAUSE_GOAL_S, "sessions"),
        ("sentence_to_audio_s", "sentence end → its audio (2nd+ sentences)", None, "sentences"),
    )
    for ax, (key, title, goal, what) in zip(axes, cdfs, strict=False):
        for i, n in enumerate(sizes):
            for system, style in (("chorus", "-"), ("baseline", "--")):
                values = sorted(_values(report, "stream", n, system, key))
                if values:
                    ys = [0.0, *((j + 1) / len(values) for j in range(len(values)))]
                    ax.step(
                        [values[0], *values],
                        ys,
                        where="post",
                        linestyle=style,
                        color=colors[i % len(colors)],
                        label=f"{system} N={n}",
                    )
        if goal is not None:
            ax.axvline(goal, color="grey", linewidth=1, linestyle=":", label=f"goal {goal:g} s")
        ax.set(title=title, xlabel="seconds", ylabel=f"fraction of {what}", ylim=(0, 1.02))
    ax = axes[2]
    groups = (
        ("cancel_to_last_audio_s", "cancel →\nlast audio"),
        ("cancel_to_done_s", "cancel → done /\nstreams closed"),
        ("idle_after_s", "last cancel →\nserver idle"),
    )
    combos = [(system, n) for n in sizes for system in SYSTEMS]
    for c, (system, n) in enumerate(combos):
        for g, (key, _) in enumerate(groups):
            if key == "idle_after_s":
                values = [
                    r[key]
                    for r in report["runs"]
                    if r["kind"] == "barge_in" and r["n"] == n and r["system"] == system and r[key] is not None
                ]
            else:
                values = _values(report, "barge_in", n, system, key)
            x = g + (c - (len(combos) - 1) / 2) * 0.8 / max(1, len(combos))
            ax.scatter(
                [x] * len(values),
                values,
                s=14,
                color=colors[sizes.index(n) % len(colors)],
                marker="o" if system == "chorus" else "x",
                label=f"{system} N={n}" if g == 0 else None,
            )
    ax.axhline(BARGE_IN_GOAL_S, color="grey", linewidth=1, linestyle=":", label=f"goal {BARGE_IN_GOAL_S:g} s")
    ax.set_xticks(range(len(groups)), [label for _, label in groups])
    ax.set(title="barge-in (every session; idle: every pass)", ylabel="seconds")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.lines or ax.collections:
            ax.legend(fontsize=8)
    fig.suptitle(f"chorus bench-agent {report['started_at']} ({report['machine']['usable_cpus']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
