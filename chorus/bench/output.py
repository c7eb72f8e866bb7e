"""Render a finished run: the terminal text, ``bench-<time>.json`` + ``latest.json``, ``latest.md``, ``latest.png``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chorus.bench.report import (
    CAPACITY_TTFA_P95_S,
    Stat,
    Summary,
    fmt_stat,
    markdown_table,
    ratio_rows,
    rows_for,
    text_table,
)

TITLES = {
    "burst": "burst: N requests sent at once, ~10 s of speech each",
    "live": "live: N concurrent real-time streams (one arrives every 10/N s), ~10 s of speech each",
    "overload": "overload: live again at multiples of the capacity each repeat found (no stream may run dry; "
    "every caller gets audio or a prompt 429)",
}


def _capacity_line(caps: dict[str, Stat], sizes: list[int]) -> str:
    shown = ", ".join(f"{s} {fmt_stat(c, 'g')}" for s, c in caps.items())
    return (
        f"capacity (largest N of {sizes} that holds, with every smaller N holding too: no underrun, no error, no 429, "
        f"TTFA p95 <= {CAPACITY_TTFA_P95_S:g} s; median (range) over repeats): {shown}"
    )


def _conditions(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    busy = f"; {s['busy_cores']} core(s) kept busy by another process" if s.get("busy_cores") else ""
    return (
        f"{m['usable_cpus']} CPU cores ({m.get('cpu') or 'CPU not recorded'}), Python {m['python']}, "
        f"{m['platform']}, commit {m.get('commit') or '?'}; "
        f"systems: {', '.join(s['systems'])}; {s['repeats']} repeat(s), interleaved (every system once per repeat); "
        f"cells are median (min–max) over repeats; ratios are taken within each repeat{busy}. "
        "TTFA = time from sending a request to its first audio byte; a 429 or a failure counts as no audio."
    )


def render_text(report: dict[str, Any]) -> str:
    summary: Summary = report["summary"]
    reference: str = report["reference"]
    out: list[str] = [_conditions(report)]
    for workload in summary:
        if not any(summary[workload].values()):
            continue
        out.append(f"\n== {TITLES[workload]} ==")
        out.append(text_table(*rows_for(summary, workload)))
        header, rows = ratio_rows(report["ratios"], reference, workload)
        if rows:
            favour = "TTFA below 1x and throughput above 1x favour" if workload == "burst" else "TTFA below 1x favours"
            out.append(f"\n{reference} vs baselines ({favour} {reference}):")
            out.append(text_table(header, rows))
        if workload == "live":
            out.append("\n" + _capacity_line(report["capacity"], report["settings"]["live_streams"]))
    for note in report["notes"]:
        out.append(f"note: {note}")
    return "\n".join(out)


def render_markdown(report: dict[str, Any]) -> str:
    summary: Summary = report["summary"]
    reference: str = report["reference"]
    out = [f"### chorus bench, {report['started_at']}", "", _conditions(report)]
    for workload in summary:
        if not any(summary[workload].values()):
            continue
        out += ["", f"**{TITLES[workload]}**", "", markdown_table(*rows_for(summary, workload))]
        header, rows = ratio_rows(report["ratios"], reference, workload)
        if rows:
            out += ["", markdown_table(header, rows)]
        if workload == "live":
            out += ["", _capacity_line(report["capacity"], report["settings"]["live_streams"]) + "."]
    out += [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    summary: Summary = report["summary"]
    panels = [
        ("live", "ttfa_p95_s", "live: TTFA p95 (s)", True),
        ("live", "underruns", "live: underruns", False),
        ("burst", "ttfa_p95_s", "burst: TTFA p95 (s)", True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (workload, field, title, log_y) in zip(axes, panels, strict=True):
        for system, by_n in summary.get(workload, {}).items():
            points = [(n, row[field]) for n, row in by_n.items() if row[field].median is not None]
            if points:
                xs = [n for n, _ in points]
                mid = [st.median or 0.0 for _, st in points]
                low = [m - (st.low if st.low is not None else m) for m, (_, st) in zip(mid, points, strict=True)]
                high = [(st.high if st.high is not None else m) - m for m, (_, st) in zip(mid, points, strict=True)]
                ax.errorbar(xs, mid, yerr=[low, high], marker="o", capsize=3, label=system)
        if workload == "live" and field == "ttfa_p95_s":
            ax.axhline(CAPACITY_TTFA_P95_S, color="grey", linestyle="--", linewidth=1, label="1 s limit")
        sizes = sorted({n for by_n in summary.get(workload, {}).values() for n in by_n})
        if sizes:
            ax.set_xticks(sizes)  # the measured N only: a fractional N means nothing
        if log_y and ax.lines:
            ax.set_yscale("log")
        elif ax.lines:
            ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("N (concurrent streams)" if workload == "live" else "N (simultaneous requests)")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"chorus bench {report['started_at']} ({report['machine']['nproc']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")  # explicit: the temporary name has no .png suffix
    plt.close(fig)


def _json_default(value: object) -> object:
    if isinstance(value, Stat):
        return value.to_json()
    return str(value)


def _atomic_write(path: Path, text: str) -> None:
    """Write next to the target and rename, so a reader (or an interrupted run) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_files(report: dict[str, Any], out_dir: Path, stamp: str, *, latest: bool = True) -> list[Path]:
    """Always the timestamped JSON; the ``latest.*`` files only when asked (a run that measured nothing should
    not replace the last good results). A run with ``--busy-cores K`` writes ``latest-busyK.*`` instead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, allow_nan=False, default=_json_default) + "\n"
    busy = report["settings"].get("busy_cores") or 0
    name = f"latest-busy{busy}" if busy else "latest"
    paths = [out_dir / f"bench-{stamp}.json", out_dir / f"{name}.json", out_dir / f"{name}.md"]
    _atomic_write(paths[0], text)
    if not latest:
        return paths[:1]
    _atomic_write(paths[1], text)
    _atomic_write(paths[2], render_markdown(report))
    png = out_dir / f"{name}.png"
    tmp = out_dir / f"{name}.png.tmp"
    write_plot(report, tmp)
    os.replace(tmp, png)
    return [*paths, png]
