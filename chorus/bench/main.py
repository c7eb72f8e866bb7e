"""``chorus bench``: start each system in turn, load it over real HTTP on 127.0.0.1, compare, write the results."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from chorus.bench.load import busy_cores, cpu_model, git_commit
from chorus.bench.output import render_text, write_files
from chorus.bench.report import capacities, capacity_search, capacity_values, ratios, summarize_all
from chorus.bench.servers import DEFAULT_SYSTEMS, SYSTEMS, Server, describe, running
from chorus.bench.workloads import MAX_REQUESTS, Measurement, measure, wait_idle, warm_up
from chorus.errors import ChorusError

WORKLOADS = ("burst", "live")
# Past this TTFA p95 (or a quarter of requests failing) a system is saturated: larger N would only queue longer,
# so they are skipped to keep the run bounded; capacity is unaffected because they could not pass either.
SATURATED_TTFA_S = 10.0
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
ResultsDict = dict[str, dict[str, dict[int, list[Measurement]]]]


def _sizes(value: str) -> list[int]:
    try:
        sizes = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"sizes must be between 1 and {MAX_REQUESTS}")
    return sizes


def _factors(value: str) -> list[float]:
    try:
        factors = sorted({float(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None
    if any(not 1.0 < f <= 4.0 for f in factors):
        raise argparse.ArgumentTypeError("overload factors must be above 1 and at most 4")
    return factors


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--systems",
        type=_names,
        help=f"comma-separated, from {','.join(SYSTEMS)} (default: {','.join(DEFAULT_SYSTEMS)})",
    )
    p.add_argument("--workloads", type=_names, default=list(WORKLOADS), help="burst,live (default: both)")
    p.add_argument("--burst-sizes", type=_sizes, default=[1, 8, 16], help="requests sent at once (default 1,8,16)")
    p.add_argument(
        "--live-streams",
        type=_sizes,
        default=[8, 16, 24, 32, 40, 44, 48, 52, 56],
        help="concurrent live streams, the capacity ladder (default 8,16,24,32,40,44,48,52,56)",
    )
    p.add_argument("--window-s", type=float, default=30.0, help="seconds over which live streams arrive (30)")
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of every system (default 3): median (min-max) reported"
    )
    p.add_argument(
        "--busy-cores",
        type=int,
        default=0,
        help="keep this many cores busy with another process during the whole run (does admission hold?)",
    )
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-request limit, queueing included (60)")
    p.add_argument("--out", default="bench/results", help="folder for the JSON, markdown and PNG results")
    p.add_argument("--quick", action="store_true", help="CI smoke run: burst 1,4; live 4 over a 6 s window")
    p.add_argument("--url", help="benchmark this already-running chorus (127.0.0.1 only) instead of starting one")
    p.add_argument("--chorus-args", default="", help='extra flags for "chorus serve", e.g. "--max-slots 32"')
    p.add_argument("--no-skip", action="store_true", help="measure every N even after a system saturates")
    p.add_argument(
        "--cost",
        action="store_true",
        help="no load test: turn measured throughput (--results) into $ per 1M characters for --prices",
    )
    p.add_argument("--prices", help="with --cost: YAML of machine kind -> $/hour and API $/1M chars")
    p.add_argument("--results", default="bench/results/latest.json", help="with --cost: the bench results to price")
    p.add_argument(
        "--overload",
        type=_factors,
        default=[1.25, 1.5],
        help="after the live ladder, chorus again at these multiples of the capacity it just showed (default "
        "1.25,1.5; empty to skip): no stream may run dry, every caller gets audio or a prompt 429",
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    systems: list[str] = args.systems or (["chorus"] if args.url else list(DEFAULT_SYSTEMS))
    for name in systems:
        if name not in SYSTEMS:
            raise ChorusError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    for name in args.workloads:
        if name not in WORKLOADS:
            raise ChorusError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    if args.url and urlsplit(args.url).hostname not in LOOPBACK_HOSTS:
        raise ChorusError(f"--url must point at this machine (127.0.0.1), not {args.url}")
    if not (1 <= args.repeats <= 20 and 0 < args.window_s <= 600 and 1 <= args.timeout_s <= 600):
        raise ChorusError("need 1 <= --repeats <= 20, 0 < --window-s <= 600 and 1 <= --timeout-s <= 600")
    if not 0 <= args.busy_cores <= 64:
        raise ChorusError("need 0 <= --busy-cores <= 64")
    quick = bool(args.quick)
    return {
        "systems": list(dict.fromkeys(systems)),
        "workloads": [w for w in WORKLOADS if w in args.workloads],
        "burst_sizes": [1, 4] if quick else args.burst_sizes,
        "live_streams": [4] if quick else args.live_streams,
        "window_s": 6.0 if quick else args.window_s,
        "repeats": 1 if quick else args.repeats,
        "busy_cores": args.busy_cores,
        "timeout_s": args.timeout_s,
        "quick": quick,
        "url": args.url,
        "chorus_args": shlex.split(args.chorus_args),
        "skip_saturated": not args.no_skip,
        "overload": [] if quick or "live" not in args.workloads else args.overload,
        "out": str(args.out),
    }


def _machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "loadavg_at_start": os.getloadavg(),
        "commit": git_commit(),
        "versions": {d: ver(d) for d in ("chorus-tts", "piper-tts", "onnxruntime", "httpx")},
    }


def _saturated(m: Measurement) -> bool:
    p95, requests = m.ttfa_p95_s, m.requests or 1
    return p95 is None or p95 > SATURATED_TTFA_S or m.errors + m.rejected_429 >= 0.25 * requests


def _bench_system(server: Server, cfg: dict[str, Any], repeat: int, results: ResultsDict, notes: list[str]) -> None:
    idle_probe_s = warm_up(server, cfg["timeout_s"])
    last: Measurement | None = None
    for workload in cfg["workloads"]:
        sizes: list[int] = cfg["burst_sizes"] if workload == "burst" else cfg["live_streams"]
        for i, n in enumerate(sizes):
            wait_idle(server, idle_probe_s, last)
            started = time.monotonic()
            last = measure(server, workload, n, window_s=cfg["window_s"], timeout_s=cfg["timeout_s"], repeat=repeat)
            results[workload][server.name].setdefault(n, []).append(last)
            p95 = "fail" if last.ttfa_p95_s is None else f"{last.ttfa_p95_s:.3f} s"
            print(
                f"[{server.name}] repeat {repeat + 1}/{cfg['repeats']} {workload} N={n}: {last.ok}/{last.requests} ok, "
                f"{last.rejected_429} 429, TTFA p95 {p95}, {last.audio_per_wall_s:.1f} audio-s/s, "
                f"{last.underruns} underruns ({time.monotonic() - started:.1f} s)",
                flush=True,
            )
            if cfg["skip_saturated"] and i + 1 < len(sizes) and _saturated(last):
                rest = ",".join(map(str, sizes[i + 1 :]))
                notes.append(f"{server.name} repeat {repeat + 1}: {workload} N={rest} skipped, saturated at N={n}")
                break
    if server.kind == "chorus" and cfg["overload"]:
        last = _overload(server, cfg, repeat, results, notes, last, idle_probe_s)


def _overload(
    server: Server,
    cfg: dict[str, Any],
    repeat: int,
    results: ResultsDict,
    notes: list[str],
    last: Measurement | None,
    idle_probe_s: float,
) -> Measurement | None:
    """The live workload again at multiples of the capacity this repeat just found (keyed by factor x 100)."""
    ladder = {n: runs[-1] for n, runs in results["live"][server.name].items() if runs and runs[-1].repeat == repeat}
    capacity = capacity_search(ladder)
    if capacity == 0:
        notes.append(f"{server.name} repeat {repeat + 1}: no overload runs, no live capacity to multiply")
        return last
    for factor in cfg["overload"]:
        n = min(MAX_REQUESTS, round(factor * capacity))
        wait_idle(server, idle_probe_s, last)
        last = measure(server, "live", n, window_s=cfg["window_s"], timeout_s=cfg["timeout_s"], repeat=repeat)
        results.setdefault("overload", {}).setdefault(server.name, {}).setdefault(round(100 * factor), []).append(last)
        print(
            f"[{server.name}] repeat {repeat + 1}/{cfg['repeats']} overload {factor:g}x capacity {capacity} = N={n}: "
            f"{last.ok}/{last.requests} ok, {last.rejected_429} 429, {last.errors} errors, "
            f"{last.underruns} underruns",
            flush=True,
        )
    return last


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` blocks that stop the servers run either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_bench(args: argparse.Namespace) -> int:
    if args.cost:
        from chorus.bench.cost import run_cost

        return run_cost(args)
    cfg = _settings(args)
    started = dt.datetime.now().astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(cfg["out"])
    results: ResultsDict = {w: {s: {} for s in cfg["systems"]} for w in cfg["workloads"]}
    notes: list[str] = []
    servers: dict[str, Any] = {}
    interrupted = False
    machine = _machine()
    with _sigterm_as_interrupt(), busy_cores(cfg["busy_cores"]):
        try:
            # Interleaved: every system once per repeat (A B C, A B C, ...), so slow drifts of a shared machine
            # fall on all of them alike and each repeat's ratios compare neighbours in time.
            for repeat in range(cfg["repeats"]):
                for system in cfg["systems"]:
                    _run_system(system, repeat, cfg, out_dir, results, servers, notes)
        except KeyboardInterrupt:
            interrupted = True
            notes.append("interrupted: partial results")
            print("\ninterrupted; servers stopped; writing what was measured", file=sys.stderr, flush=True)
    machine["loadavg_at_end"] = os.getloadavg()
    reference = "chorus" if "chorus" in cfg["systems"] else cfg["systems"][0]
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": cfg,
        "machine": machine,
        "servers": servers,
        "reference": reference,
        "summary": summarize_all(results),
        "capacity": capacities(results) if "live" in cfg["workloads"] else {},
        "capacity_per_repeat": capacity_values(results) if "live" in cfg["workloads"] else {},
        "ratios": ratios(results, reference),
        "notes": notes,
        "runs": {
            w: {s: {n: [m.to_json() for m in runs] for n, runs in by_n.items()} for s, by_n in by_s.items()}
            for w, by_s in results.items()
        },
    }
    print(render_text(report))
    measured = any(runs for by_s in results.values() for by_n in by_s.values() for runs in by_n.values())
    # latest.* always describe the last complete run; a partial one is still kept in its timestamped file.
    for path in write_files(report, out_dir, stamp, latest=measured and not interrupted):
        print(f"wrote {path}")
    return 130 if interrupted else (0 if measured else 1)


def _run_system(
    system: str,
    repeat: int,
    cfg: dict[str, Any],
    out_dir: Path,
    results: ResultsDict,
    servers: dict[str, Any],
    notes: list[str],
) -> None:
    url = cfg["url"] if system == "chorus" else None
    print(f"[{system}] repeat {repeat + 1}: " + (f"using {url}" if url else "starting"), flush=True)
    try:
        with running(system, chorus_args=cfg["chorus_args"], log_dir=out_dir / "logs", url=url) as srv:
            entry = servers.setdefault(system, {"command": describe(srv), "startup_s": []})
            entry["startup_s"].append(round(srv.startup_s, 2))
            print(f"[{system}] ready in {srv.startup_s:.1f} s at {srv.base_url}", flush=True)
            _bench_system(srv, cfg, repeat, results, notes)
    except RuntimeError as e:
        # One system failing to start should not cost the measurements of the others.
        servers.setdefault(system, {})["error"] = str(e)
        notes.append(f"{system} repeat {repeat + 1}: not measured: {str(e).splitlines()[0]}")
        print(f"[{system}] {e}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus bench", description="load-test chorus against baselines")
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except ChorusError as e:
        print(f"chorus bench: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
