"""From measurements to verdicts: medians over repeats, live capacity, chorus/baseline ratios, and tables.

The same summary feeds the terminal table, the JSON file and the markdown file, so they can never disagree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from chorus.bench.workloads import Measurement

# Live capacity: the most concurrent streams served with no underrun, no error, and first audio within this.
CAPACITY_TTFA_P95_S = 1.0
MEDIAN_FIELDS = (
    "requests",
    "ok",
    "errors",
    "rejected_429",
    "ttfa_p50_s",
    "ttfa_p95_s",
    "audio_s",
    "wall_s",
    "audio_per_wall_s",
    "underruns",
    "streams_with_underruns",
    "stall_s",
    "client_cpu_s",
    "server_cpu_s",
)
TTFA_FIELDS = ("ttfa_p50_s", "ttfa_p95_s")

Summary = dict[str, dict[str, dict[int, dict[str, float | None]]]]  # workload -> system -> N -> field -> median


def median_of(runs: list[Measurement]) -> dict[str, float | None]:
    """Per-field medians over repeats. A missing TTFA percentile means a request got no audio: it counts as +inf,
    so one bad repeat out of three does not hide, but does not dominate either."""
    out: dict[str, float | None] = {}
    for name in MEDIAN_FIELDS:
        raw = [getattr(m, name) for m in runs]
        if name in TTFA_FIELDS:
            values = [math.inf if v is None else float(v) for v in raw]
        else:
            values = [float(v) for v in raw if v is not None]
        med = statistics.median(values) if values else None
        out[name] = med if med is not None and math.isfinite(med) else None
    return out


def summarize_all(results: Mapping[str, Mapping[str, Mapping[int, list[Measurement]]]]) -> Summary:
    return {
        workload: {
            system: {n: median_of(runs) for n, runs in sorted(by_n.items()) if runs} for system, by_n in sys_.items()
        }
        for workload, sys_ in results.items()
    }


def passes_live(row: Mapping[str, float | None]) -> bool:
    p95 = row.get("ttfa_p95_s")
    return p95 is not None and p95 <= CAPACITY_TTFA_P95_S and row.get("underruns") == 0 and row.get("errors") == 0


def capacities(summary: Summary) -> dict[str, int]:
    """Largest measured N that passes; 0 when none does."""
    return {
        system: max((n for n, row in by_n.items() if passes_live(row)), default=0)
        for system, by_n in summary.get("live", {}).items()
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def ratios(summary: Summary, reference: str) -> dict[str, Any]:
    """reference/baseline per workload and N: TTFA p95 (below 1 = reference faster) and throughput (above 1 =
    reference produces more audio per second), both underrun counts; and both live capacities."""
    out: dict[str, Any] = {}
    caps = capacities(summary)
    for workload, by_system in summary.items():
        ref = by_system.get(reference, {})
        for base, rows in by_system.items():
            if base == reference:
                continue
            entry = out.setdefault(base, {})
            entry[workload] = {
                n: {
                    "ttfa_p95": _ratio(ref[n]["ttfa_p95_s"], row["ttfa_p95_s"]),
                    "throughput": _ratio(ref[n]["audio_per_wall_s"], row["audio_per_wall_s"]),
                    "underruns": [ref[n]["underruns"], row["underruns"]],
                }
                for n, row in rows.items()
                if n in ref
            }
            if workload == "live":
                entry["capacity"] = {reference: caps.get(reference, 0), base: caps.get(base, 0)}
    return out


def fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


Column = tuple[str, Callable[[Mapping[str, float | None]], str]]


def _count(name: str) -> Callable[[Mapping[str, float | None]], str]:
    return lambda row: fmt(row.get(name), "g")


def _num(name: str, spec: str = ".3f") -> Callable[[Mapping[str, float | None]], str]:
    # A TTFA that is missing means some request never got audio within its timeout.
    return lambda row: fmt(row.get(name), spec, none="fail" if name in TTFA_FIELDS else "-")


BURST_COLUMNS: list[Column] = [
    ("ok/req", lambda r: f"{fmt(r.get('ok'), 'g')}/{fmt(r.get('requests'), 'g')}"),
    ("429", _count("rejected_429")),
    ("TTFA p50 s", _num("ttfa_p50_s")),
    ("TTFA p95 s", _num("ttfa_p95_s")),
    ("audio-s/s", _num("audio_per_wall_s", ".1f")),
    ("wall s", _num("wall_s", ".1f")),
]
LIVE_COLUMNS: list[Column] = [
    ("ok/streams", lambda r: f"{fmt(r.get('ok'), 'g')}/{fmt(r.get('requests'), 'g')}"),
    ("errors", _count("errors")),
    ("429", _count("rejected_429")),
    ("TTFA p50 s", _num("ttfa_p50_s")),
    ("TTFA p95 s", _num("ttfa_p95_s")),
    ("underruns", _count("underruns")),
    ("streams w/ underrun", _count("streams_with_underruns")),
    ("stall s", _num("stall_s", ".2f")),
    ("ok?", lambda r: "yes" if passes_live(r) else "no"),
]


def rows_for(summary: Summary, workload: str) -> tuple[list[str], list[list[str]]]:
    columns = BURST_COLUMNS if workload == "burst" else LIVE_COLUMNS
    header = ["system", "N", *(name for name, _ in columns)]
    rows = [
        [system, str(n), *(cell(row) for _, cell in columns)]
        for system, by_n in summary.get(workload, {}).items()
        for n, row in by_n.items()
    ]
    return header, rows


def ratio_rows(ratio: Mapping[str, Any], reference: str, workload: str) -> tuple[list[str], list[list[str]]]:
    # Live throughput is set by the arrival rate, not by the server, so live compares first audio and underruns.
    third = f"throughput {reference}/baseline" if workload == "burst" else f"underruns {reference} vs baseline"
    header = ["baseline", "N", f"TTFA p95 {reference}/baseline", third]
    rows = []
    for base, entry in ratio.items():
        for n, r in entry.get(workload, {}).items():
            last = (
                fmt_ratio(r["throughput"])
                if workload == "burst"
                else f"{fmt(r['underruns'][0], 'g')} vs {fmt(r['underruns'][1], 'g')}"
            )
            rows.append([base, str(n), fmt_ratio(r["ttfa_p95"]), last])
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
