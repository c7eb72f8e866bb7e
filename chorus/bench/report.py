"""From measurements to verdicts: min/median/max over repeats, live capacity, per-repeat ratios, and tables.

Every configuration runs several times, interleaved (chorus, baseline, ..., chorus, baseline, ...). A field is
reported as its median with the range over repeats; a ratio chorus/baseline is computed *within* each repeat (both
measured minutes apart on the same machine) and reported as the median of those ratios with their range. Capacity
is found in each repeat on its own, then summarised the same way. The same summary feeds the terminal tables, the
JSON file and the markdown file, so they can never disagree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chorus.bench.workloads import Measurement

# Live capacity: the most concurrent streams served with no underrun, no error, no 429 and first audio within this.
CAPACITY_TTFA_P95_S = 1.0
FIELDS = (
    "n",
    "requests",
    "ok",
    "errors",
    "rejected_429",
    "ttfa_p50_s",
    "ttfa_p95_s",
    "ttfa_ok_p95_s",
    "audio_s",
    "wall_s",
    "audio_per_wall_s",
    "underruns",
    "streams_with_underruns",
    "stall_s",
    "reject_p95_s",
    "eta_count",
    "eta_error_p50_s",
    "eta_abs_error_p95_s",
    "client_cpu_s",
    "server_cpu_s",
    "server_cpu_per_audio_s",
)
# A missing value of these means a request got no audio: it counts as +inf (one bad repeat shows, as "fail").
TTFA_FIELDS = ("ttfa_p50_s", "ttfa_p95_s")
RATIO_FIELDS = {"ttfa_p95": "ttfa_p95_s", "throughput": "audio_per_wall_s"}

Results = Mapping[str, Mapping[str, Mapping[int, Sequence[Measurement]]]]  # workload -> system -> N -> runs


@dataclass(frozen=True, slots=True)
class Stat:
    """A field over repeats: median and range (None where no repeat measured it)."""

    median: float | None
    low: float | None
    high: float | None
    count: int

    def to_json(self) -> dict[str, float | int | None]:
        return {"median": self.median, "min": self.low, "max": self.high, "count": self.count}


def stat(values: Sequence[float | None], *, missing_is_inf: bool = False) -> Stat:
    """Median, min and max of ``values``; a missing value is dropped, or counts as +inf with ``missing_is_inf``.
    Infinite results come back as None (shown as "fail")."""
    xs = (
        [math.inf if v is None else float(v) for v in values]
        if missing_is_inf
        else [float(v) for v in values if v is not None]
    )
    if not xs:
        return Stat(None, None, None, 0)

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return Stat(finite(statistics.median(xs)), finite(min(xs)), finite(max(xs)), len(xs))


def summarize_runs(runs: Sequence[Measurement]) -> dict[str, Stat]:
    return {name: stat([getattr(m, name) for m in runs], missing_is_inf=name in TTFA_FIELDS) for name in FIELDS}


Summary = dict[str, dict[str, dict[int, dict[str, Stat]]]]  # workload -> system -> N -> field -> Stat


def summarize_all(results: Results) -> Summary:
    return {
        workload: {
            system: {n: summarize_runs(runs) for n, runs in sorted(by_n.items()) if runs}
            for system, by_n in by_s.items()
        }
        for workload, by_s in results.items()
    }


def passes_live(m: Measurement) -> bool:
    """One live measurement holds: every stream served (no error, no 429), none ran dry, first audio p95 in time."""
    p95 = m.ttfa_p95_s
    return p95 is not None and p95 <= CAPACITY_TTFA_P95_S and m.underruns == 0 and m.errors == 0 and m.rejected_429 == 0


def capacity_search(by_n: Mapping[int, Measurement]) -> int:
    """The largest N that holds with every smaller measured N holding too (the ladder stops at its first failure);
    0 when the smallest fails."""
    capacity = 0
    for n in sorted(by_n):
        if not passes_live(by_n[n]):
            break
        capacity = n
    return capacity


def _by_repeat(by_n: Mapping[int, Sequence[Measurement]]) -> dict[int, dict[int, Measurement]]:
    out: dict[int, dict[int, Measurement]] = {}
    for n, runs in by_n.items():
        for m in runs:
            out.setdefault(m.repeat, {})[n] = m
    return out


def capacities(results: Results) -> dict[str, Stat]:
    """Live capacity of each system, found in each repeat, summarised over repeats."""
    return {
        system: stat([capacity_search(rows) for _, rows in sorted(_by_repeat(by_n).items())])
        for system, by_n in results.get("live", {}).items()
    }


def capacity_values(results: Results) -> dict[str, list[int]]:
    return {
        system: [capacity_search(rows) for _, rows in sorted(_by_repeat(by_n).items())]
        for system, by_n in results.get("live", {}).items()
    }


def _ratio(a: float | None, b: float | None, *, missing_is_inf: bool) -> float | None:
    """a/b; with ``missing_is_inf`` a missing value is +inf (a TTFA that failed): inf/x = inf, x/inf = 0."""
    if missing_is_inf:
        a = math.inf if a is None else a
        b = math.inf if b is None else b
    if a is None or b is None or b <= 0 or (math.isinf(a) and math.isinf(b)):
        return None
    return a / b


def ratios(results: Results, reference: str) -> dict[str, dict[str, dict[int, dict[str, Stat]]]]:
    """baseline -> workload -> N -> {ttfa_p95, throughput}: reference/baseline within each repeat, over repeats.
    TTFA below 1 = the reference starts speaking sooner; throughput above 1 = it makes more audio per second."""
    out: dict[str, dict[str, dict[int, dict[str, Stat]]]] = {}
    for workload, by_system in results.items():
        ref = _by_repeat(by_system.get(reference, {}))
        for base, by_n in by_system.items():
            if base == reference:
                continue
            pairs: dict[int, dict[str, list[float | None]]] = {}
            for rep, rows in _by_repeat(by_n).items():
                for n, m in rows.items():
                    mine = ref.get(rep, {}).get(n)
                    if mine is None:
                        continue
                    cell = pairs.setdefault(n, {key: [] for key in RATIO_FIELDS})
                    for key, name in RATIO_FIELDS.items():
                        inf = name in TTFA_FIELDS
                        cell[key].append(_ratio(getattr(mine, name), getattr(m, name), missing_is_inf=inf))
            out.setdefault(base, {})[workload] = {
                n: {key: stat(values) for key, values in cell.items()} for n, cell in sorted(pairs.items())
            }
    return out


def fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def fmt_stat(s: Stat, spec: str = ".3f", none: str = "-") -> str:
    """``median (min-max)``, or just the value when every repeat agrees."""
    if s.count == 0:
        return "-"
    if s.median is None:
        return none
    if s.low == s.high or s.count == 1:
        return format(s.median, spec)
    return f"{format(s.median, spec)} ({fmt(s.low, spec, none)}–{fmt(s.high, spec, none)})"


def fmt_ratio(s: Stat) -> str:
    return "-" if s.median is None else fmt_stat(s, ".2f") + "x"


Column = tuple[str, Callable[[Mapping[str, Stat]], str]]


def _col(name: str, spec: str = ".3f") -> Callable[[Mapping[str, Stat]], str]:
    none = "fail" if name in TTFA_FIELDS else "-"
    return lambda row: fmt_stat(row[name], spec, none)


BURST_COLUMNS: list[Column] = [
    ("ok/req", lambda r: f"{fmt(r['ok'].median, 'g')}/{fmt(r['requests'].median, 'g')}"),
    ("TTFA p50 s", _col("ttfa_p50_s")),
    ("TTFA p95 s", _col("ttfa_p95_s")),
    ("audio-s/s", _col("audio_per_wall_s", ".1f")),
    ("server core-s per audio-s", _col("server_cpu_per_audio_s", ".3f")),
]
LIVE_COLUMNS: list[Column] = [
    ("ok/streams", lambda r: f"{fmt(r['ok'].median, 'g')}/{fmt(r['requests'].median, 'g')}"),
    ("429", _col("rejected_429", "g")),
    ("errors", _col("errors", "g")),
    ("TTFA p50 s", _col("ttfa_p50_s")),
    ("TTFA p95 s", _col("ttfa_p95_s")),
    ("TTFA p95 served s", _col("ttfa_ok_p95_s")),
    ("underruns", _col("underruns", "g")),
    ("429 p95 s", _col("reject_p95_s")),
    (
        "ETA error p50 / abs p95 s",
        lambda r: f"{fmt_stat(r['eta_error_p50_s'], '+.2f')} / {fmt_stat(r['eta_abs_error_p95_s'], '.2f')}",
    ),
    ("runs", lambda r: str(r["requests"].count)),
]


OVERLOAD_COLUMNS: list[Column] = [
    ("N (range)", _col("n", "g")),
    *(c for c in LIVE_COLUMNS if c[0] not in ("TTFA p50 s", "TTFA p95 s")),
    ("stall s", _col("stall_s", ".2f")),
]


def rows_for(summary: Summary, workload: str) -> tuple[list[str], list[list[str]]]:
    """Table rows; an overload row's key is its multiple of the repeat's live capacity, x100."""
    columns = {"burst": BURST_COLUMNS, "live": LIVE_COLUMNS, "overload": OVERLOAD_COLUMNS}[workload]
    first = "load" if workload == "overload" else "N"
    header = ["system", first, *(name for name, _ in columns)]
    rows = [
        [system, f"{n / 100:g}x capacity" if workload == "overload" else str(n), *(cell(row) for _, cell in columns)]
        for system, by_n in summary.get(workload, {}).items()
        for n, row in by_n.items()
    ]
    return header, rows


def ratio_rows(ratio: Mapping[str, Any], reference: str, workload: str) -> tuple[list[str], list[list[str]]]:
    # Live throughput is set by the arrival rate, not by the server, so live compares first audio only. Overload
    # runs have no ratios: each system's N there is a multiple of its own capacity, so the rows do not pair up.
    header = ["baseline", "N", f"TTFA p95 {reference}/baseline"]
    if workload == "overload":
        return header, []
    if workload == "burst":
        header.append(f"throughput {reference}/baseline")
    rows = []
    for base, entry in ratio.items():
        for n, r in sorted(entry.get(workload, {}).items()):
            row = [base, str(n), fmt_ratio(r["ttfa_p95"])]
            if workload == "burst":
                row.append(fmt_ratio(r["throughput"]))
            rows.append(row)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_json(summary: Summary) -> dict[str, Any]:
    return {
        w: {s: {n: {f: st.to_json() for f, st in row.items()} for n, row in by_n.items()} for s, by_n in by_s.items()}
        for w, by_s in summary.items()
    }


def ratios_json(ratio: Mapping[str, Any]) -> dict[str, Any]:
    return {
        base: {
            w: {n: {k: st.to_json() for k, st in cell.items()} for n, cell in by_n.items()} for w, by_n in entry.items()
        }
        for base, entry in ratio.items()
    }
