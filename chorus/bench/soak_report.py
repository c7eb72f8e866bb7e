"""``chorus bench-soak``'s verdict and report: the requirements checked against a run, its tables and plot.

The measuring is in chorus.bench.soak; this module only reads the report dict it builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chorus.bench.report import markdown_table

IDLE_LIMIT_S = 30.0
FLAT_MIB_PER_HOUR = 20.0
MIN_JUDGED_SOAK_S = 300.0
PLOT_MIN_SPAN_MIB = 20.0  # the RSS axis spans at least this: a fraction of a MiB must not look like a leak


def checks(report: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(requirement, held — None where not judged, what was measured)."""
    flood, soak, end = report["flood"], report["soak"], report["drain"]

    def answered(phase: dict[str, Any], total: int) -> tuple[bool, str]:
        o = phase["outcomes"]
        detail = ", ".join(f"{name}: {n}" for name, n in o.items() if n) + f" (of {total})"
        return o["200"] + o["429"] == total, detail

    missing = sum(v is None or not v.isdigit() for v in report["retry_after"])
    trend = soak["rss"]
    return [
        ("flood: every caller got 200 or 429", *answered(flood, flood["clients"])),
        ("every 429 carried Retry-After", missing == 0, f"{missing} of {len(report['retry_after'])} without"),
        (
            f"idle within {IDLE_LIMIT_S:g} s after the flood",
            flood["idle_after_s"] is not None,
            "not idle" if flood["idle_after_s"] is None else f"{flood['idle_after_s']:.1f} s",
        ),
        ("soak: every request got 200 or 429", *answered(soak, soak["requests"])),
        (
            "soak: the server kept serving",  # else a flat RSS says nothing
            soak["outcomes"]["200"] > 0,
            f"{soak['outcomes']['200']} served, {soak['audio_s_served']:.0f} s of audio",
        ),
        (
            f"soak: RSS slope < {FLAT_MIB_PER_HOUR:g} MiB/h",
            trend["flat"],
            f"{trend['slope_mib_per_h']:+.1f} ± {trend['slope_stderr_mib_per_h']:.1f} MiB/h"
            + ("" if trend["flat"] is not None else f" (not judged: soak < {MIN_JUDGED_SOAK_S:g} s)"),
        ),
        (
            "SIGTERM: graceful exit",
            end["graceful"],
            f"exit {end['exit_code']} after {end['seconds']:.1f} s, shutdown complete: {end['shutdown_complete']}",
        ),
    ]


def held_text(held: bool | None) -> str:
    return "not judged" if held is None else "yes" if held else "NO"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def numbers(report: dict[str, Any]) -> list[list[str]]:
    """The table's rows: measure, value."""
    flood, soak, trend = report["flood"], report["soak"], report["soak"]["rss"]
    first, refused = flood["first_byte_200_s"], flood["total_429_s"]
    return [
        ["flood: 200 first byte p50 / p95 / max (s)", " / ".join(_s(first[k]) for k in ("p50", "p95", "max"))],
        ["flood: 429 answer p50 / p95 / max (s)", " / ".join(_s(refused[k]) for k in ("p50", "p95", "max"))],
        ["flood: peak sockets open in the server", str(flood["peak_server_sockets"])],
        [
            "flood: server RSS before / peak / after (MiB)",
            f"{flood['rss_before_mib']:.0f} / {flood['rss_peak_mib']:.0f} / {flood['rss_after_mib']:.0f}",
        ],
        ["soak: requests (200 after the warm-up)", f"{soak['requests']} ({soak['completed_after_warmup']})"],
        ["soak: 200 first byte p50 / p95 (s)", " / ".join(_s(soak["first_byte_200_s"][k]) for k in ("p50", "p95"))],
        [
            "soak: server RSS start / end / max (MiB)",
            f"{trend['start_mib']:.1f} / {trend['end_mib']:.1f} / {trend['max_mib']:.1f}",
        ],
    ]


def conditions(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    return (
        f"{m['usable_cpus']} CPU cores ({m.get('cpu') or 'CPU not recorded'}), Python {m['python']}, "
        f"{m['platform']}, commit {m.get('commit') or '?'}; "
        f"chorus serve with worker.max_slots {s['max_slots']} (queue_limit {s['queue_limit']}, max_queue_wait_s "
        f"{s['max_queue_wait_s']:g}); flood of {s['clients']} callers x {_s(report['flood']['audio_s_per_200']['p50'])}"
        f" s of speech; soak of {s['soak_streams']} streams for {s['soak_s']:g} s after a {s['warmup_s']:g} s "
        f"warm-up, RSS every {s['rss_every_s']:g} s."
    )


def render_markdown(report: dict[str, Any]) -> str:
    rows = [[name, held_text(held), detail] for name, held, detail in report["checks"]]
    return "\n".join(
        [
            f"### chorus bench-soak, {report['started_at']}",
            "",
            conditions(report),
            "",
            markdown_table(["requirement", "held", "measured"], rows),
            "",
            markdown_table(["measure", "value"], numbers(report)),
            "",
        ]
    )


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    soak, trend = report["soak"], report["soak"]["rss"]
    fig, (rss_ax, cdf_ax) = plt.subplots(1, 2, figsize=(14, 4.8))
    samples = soak["rss_samples"]
    for warm, style, label in ((True, "o", "warm-up (not judged)"), (False, "o-", "server RSS")):
        kept = [s for s in samples if (s["t_s"] < soak["warmup_s"]) == warm]
        rss_ax.plot([s["t_s"] / 60 for s in kept], [s["rss_mib"] for s in kept], style, ms=3, label=label)
    ends = [soak["warmup_s"], samples[-1]["t_s"]]
    rss_ax.plot(
        [t / 60 for t in ends],
        [trend["intercept_mib"] + trend["slope_mib_per_h"] / 3600 * t for t in ends],
        "--",
        color="red",
        label=f"fit {trend['slope_mib_per_h']:+.1f} MiB/h (bound {FLAT_MIB_PER_HOUR:g})",
    )
    rss_ax.set(title="soak: server RSS", xlabel="minutes since the soak began", ylabel="MiB")
    low, high = rss_ax.get_ylim()
    if high - low < PLOT_MIN_SPAN_MIB:
        middle = (low + high) / 2
        rss_ax.set_ylim(middle - PLOT_MIN_SPAN_MIB / 2, middle + PLOT_MIN_SPAN_MIB / 2)
    requests = report["flood"]["requests"]
    curves = {
        "200: first byte": [r["first_byte_s"] for r in requests if r["outcome"] == "200"],
        "200: whole body": [r["total_s"] for r in requests if r["outcome"] == "200"],
        "429: answer": [r["total_s"] for r in requests if r["outcome"] == "429"],
    }
    for label, values in curves.items():
        if values:
            xs = sorted(values)
            cdf_ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{label} (n={len(xs)})")
    failed = sum(r["outcome"] not in ("200", "429") for r in requests)
    cdf_ax.set(
        title=f"flood: {len(requests)} callers at once" + (f" ({failed} failed, not drawn)" if failed else ""),
        xlabel="seconds since sent",
        ylabel="share of the group (CDF)",
    )
    for ax in (rss_ax, cdf_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"chorus bench-soak {report['started_at']} ({report['machine']['usable_cpus']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
