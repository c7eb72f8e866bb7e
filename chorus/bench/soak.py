"""``chorus bench-soak``: does one chorus server survive a stampede, and hold its memory over time?

It starts a real ``chorus serve`` (bundled CPU voice, ``worker.max_slots`` ``--max-slots``, an empty data folder)
on 127.0.0.1 and proves, over real HTTP, what an on-call engineer relies on:

1. **Flood.** ``--clients`` callers (500; the lean client of chorus/bench/rawhttp.py), one connection each, all
   released at the same instant, each POSTing one short sentence (~2 s of speech) and reading the whole body. Every
   caller must get either 200 with its audio or 429 with ``Retry-After`` (the waiting queue holds
   ``server.queue_limit``, 256, and admission control refuses a predicted wait over ``server.max_queue_wait_s``): no
   5xx, no refused or reset connection, no hang (a caller gives up after 300 s; on 2 cores all 500 are answered
   within about 2 minutes). Then the server must be idle (``/health``: no active slot, nobody waiting) within 30 s —
   more would mean a slot or a waiter leaked — and its resident memory is recorded before and after.
2. **Soak.** ``--soak-streams`` callers (8: the live capacity ``chorus bench`` finds on a 2-core machine, so the
   server runs at capacity) each ask again as soon as their last answer ended (after a 429, once its Retry-After
   has passed), for ``--soak-s`` seconds after a 30 s warm-up that is not judged. Again every answer must be 200
   or 429, with no connection error, and some must be 200 (a server that serves nothing keeps a flat memory);
   and the resident memory (VmRSS, every ``--rss-every-s``) must be flat: its least-squares slope under
   20 MiB/h. Why 20 MiB/h: the server holds about 0.5 GiB; a leak that slow takes a
   day to add another 0.5 GiB, which a memory dashboard shows long before a container runs out, while a faster
   one would page someone. The slope's standard error is reported next to it, so a reader sees whether the run
   resolved the bound; a soak under 5 minutes cannot, so its slope is reported but not judged (``--quick``).
3. **Drain.** SIGTERM; the server must finish its shutdown (uvicorn's "Application shutdown complete": the
   engine drained, the audit trail closed) within 40 s (the server's 30 s grace, and the close).
   Its exit status is 0, or -SIGTERM when uvicorn re-raises the signal it caught once shut down (the pair
   tests/e2e accept too).

The exit code is 0 only when every requirement held; ``<out>/soak.json`` has every number and the conditions,
``soak.md`` a table, ``soak.png`` the RSS over time with its fitted line and the flood's latencies by status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import resource
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from chorus.bench.client import PCM_BYTES_PER_SECOND, StreamResult, make_client, speak
from chorus.bench.corpus import SENTENCES
from chorus.bench.main import _machine
from chorus.bench.rawhttp import raw_speak, speech_request
from chorus.bench.report import text_table
from chorus.bench.servers import Server, describe, running
from chorus.bench.soak_report import (
    FLAT_MIB_PER_HOUR,
    IDLE_LIMIT_S,
    MIN_JUDGED_SOAK_S,
    checks,
    conditions,
    held_text,
    numbers,
    render_markdown,
    write_plot,
)
from chorus.bench.workloads import MAX_REQUESTS, percentile, warm_up
from chorus.config import load_settings
from chorus.errors import ChorusError

# The corpus's short sentences (2-3 s of speech each); the flood sends the shortest (~2 s).
SOAK_TEXTS = tuple(s for s in SENTENCES if len(s) <= 52)
FLOOD_TEXT = min(SOAK_TEXTS, key=len)
REQUEST_TIMEOUT_S = 300.0
DRAIN_LIMIT_S = 40.0
FLOOD_SAMPLE_S = 0.25  # often enough to see the flood's peak of open sockets
SHUTDOWN_LINE = "Application shutdown complete"
GRACEFUL_EXITS = (0, -signal.SIGTERM)
# What a request ended as; "connection error" is any transport failure (refused, reset, cut short, no audio).
OUTCOMES = ("200", "429", "5xx", "other status", "timeout", "connection error")


@dataclass(frozen=True)
class ProcSample:
    """The server process at one moment: seconds since sampling began, resident MiB, open sockets."""

    t_s: float
    rss_mib: float
    sockets: int


class Refusals:
    """The Retry-After of every 429 a client got, read by an httpx response hook (``speak`` keeps no headers)."""

    def __init__(self) -> None:
        self.retry_after: list[str | None] = []

    async def hook(self, response: httpx.Response) -> None:
        if response.status_code == 429:
            self.retry_after.append(response.headers.get("retry-after"))

    def attach(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        client.event_hooks = {"response": [self.hook]}
        return client

    def last_s(self) -> float:
        """The latest Retry-After in seconds (1 where it is missing or malformed)."""
        value = self.retry_after[-1] if self.retry_after else None
        return float(value) if value is not None and value.isdigit() else 1.0


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS in /proc/<pid>/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # the kernel writes kB
    raise RuntimeError(f"process {pid} has no VmRSS")


def open_sockets(pid: int) -> int:
    """Sockets the process holds: its listener and every connection."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed between the listing and the read
            count += os.readlink(fd).startswith("socket:")
    return count


async def sample_process(pid: int, every_s: float, into: list[ProcSample], started: float) -> None:
    """Append a sample every ``every_s`` from ``started`` (perf_counter), on a fixed grid so that a slow sample does
    not shift the rest, until cancelled."""
    while True:
        into.append(ProcSample(time.perf_counter() - started, rss_mib(pid), open_sockets(pid)))
        await asyncio.sleep(every_s - (time.perf_counter() - started) % every_s)


def outcome(r: StreamResult) -> str:
    if r.error is None:
        return "200"  # speak() leaves no error only on a 200 read to its end, with audio
    if r.status == 429:
        return "429"
    if r.status is not None and r.status >= 500:
        return "5xx"
    if r.status not in (None, 200):
        return "other status"
    return "timeout" if r.error.startswith("timeout") else "connection error"


def tally(results: list[StreamResult]) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in results:
        counts[outcome(r)] += 1
    return counts


def error_samples(results: list[StreamResult]) -> list[str]:
    return sorted({r.error for r in results if r.error is not None and r.status != 429})[:5]


def spread(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / max (nearest rank), in seconds; None where there are no values."""
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values, default=None)}


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """The least-squares line y = a + b x through ``points``: (b, a, the standard error of b)."""
    n = len(points)
    if n < 3:
        raise ValueError("a line and its error need at least 3 points")
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        raise ValueError("the points share one x")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    intercept = mean_y - slope * mean_x
    residual = sum((y - intercept - slope * x) ** 2 for x, y in points)
    return slope, intercept, math.sqrt(residual / (n - 2) / sxx)


def rss_trend(samples: list[ProcSample], warmup_s: float, soak_s: float) -> dict[str, Any]:
    """RSS after the warm-up: start, end, max and its fitted slope; ``flat`` is None for a soak too short to judge."""
    kept = [s for s in samples if s.t_s >= warmup_s]
    slope, intercept, stderr = fit_line([(s.t_s, s.rss_mib) for s in kept])
    per_hour = slope * 3600
    return {
        "samples": len(kept),
        "start_mib": kept[0].rss_mib,
        "end_mib": kept[-1].rss_mib,
        "max_mib": max(s.rss_mib for s in kept),
        "slope_mib_per_h": per_hour,
        "slope_stderr_mib_per_h": stderr * 3600,
        "intercept_mib": intercept,
        "bound_mib_per_h": FLAT_MIB_PER_HOUR,
        "flat": per_hour < FLAT_MIB_PER_HOUR if soak_s >= MIN_JUDGED_SOAK_S else None,
    }


def wait_until_idle(server: Server, limit_s: float) -> float | None:
    """Seconds until ``/health`` shows no active slot and nobody waiting; None if not within ``limit_s``."""
    started = time.monotonic()
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while (elapsed := time.monotonic() - started) <= limit_s:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = client.get(server.base_url + "/health").json()
                if health["active_slots"] == 0 and health["waiting"] == 0:
                    return elapsed
            time.sleep(0.1)
    return None


def engine_stats(server: Server) -> dict[str, Any]:
    """The server's ``/v1/stats``: slots, queue, what admission control learned, the engine's counters."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        stats: dict[str, Any] = client.get(server.base_url + "/v1/stats").raise_for_status().json()
        return stats


async def _flood(
    server: Server, pid: int, clients: int
) -> tuple[list[StreamResult], list[str | None], list[ProcSample]]:
    samples, gate = list[ProcSample](), asyncio.Event()
    host, port, request = speech_request(server.base_url, FLOOD_TEXT)

    async def caller(index: int) -> tuple[StreamResult, str | None]:
        await gate.wait()
        return await raw_speak(host, port, request, index, REQUEST_TIMEOUT_S)

    # The lean caller (chorus/bench/rawhttp.py): 500 httpx requests cost the 2 shared cores seconds of the
    # client's own CPU, which would be reported as the server's latency. One connection per caller.
    tasks = [asyncio.create_task(caller(i)) for i in range(clients)]
    await asyncio.sleep(0)  # every caller now waits at the gate
    sampler = asyncio.create_task(sample_process(pid, FLOOD_SAMPLE_S, samples, time.perf_counter()))
    gate.set()
    answers = await asyncio.gather(*tasks)
    sampler.cancel()
    results = [result for result, _ in answers]
    retry_after = [after for result, after in answers if result.status == 429]
    return results, retry_after, samples


def run_flood(server: Server, pid: int, clients: int) -> tuple[dict[str, Any], list[str | None]]:
    """Phase 1; returns its numbers and the Retry-After of each of its 429s."""
    warm_up(server, REQUEST_TIMEOUT_S)  # model sessions and thread pools exist before the flood
    rss_before = rss_mib(pid)
    started = time.monotonic()
    results, retry_after, samples = asyncio.run(_flood(server, pid, clients))
    wall_s = time.monotonic() - started
    idle_s = wait_until_idle(server, IDLE_LIMIT_S)
    stats = engine_stats(server)
    served = [r for r in results if outcome(r) == "200"]
    refused = [r for r in results if outcome(r) == "429"]
    flood = {
        "clients": clients,
        "outcomes": tally(results),
        "error_samples": error_samples(results),
        "send_spread_s": max(r.sent_at for r in results) - min(r.sent_at for r in results),
        "wall_s": wall_s,
        "first_byte_200_s": spread([r.ttfa_s for r in served if r.ttfa_s is not None]),
        "total_200_s": spread([r.end_s for r in served if r.end_s is not None]),
        "total_429_s": spread([r.end_s for r in refused if r.end_s is not None]),
        "audio_s_per_200": spread([r.audio_s for r in served]),
        "peak_server_sockets": max(s.sockets for s in samples),
        "rss_before_mib": rss_before,
        "rss_peak_mib": max(s.rss_mib for s in samples),
        "rss_after_mib": rss_mib(pid),
        "idle_after_s": idle_s,
        "server_stats_after": stats,
        "requests": [
            {
                "status": r.status,
                "outcome": outcome(r),
                "first_byte_s": r.ttfa_s,
                "total_s": r.end_s,
                "bytes": round(r.audio_s * PCM_BYTES_PER_SECOND),
                "error": None if r.status == 429 else r.error,
            }
            for r in results
        ],
    }
    return flood, retry_after


async def _soak(
    server: Server, pid: int, streams: int, seconds: float, every_s: float
) -> tuple[list[StreamResult], Refusals, list[ProcSample]]:
    refusals, samples, results = Refusals(), list[ProcSample](), list[StreamResult]()
    deadline = time.perf_counter() + seconds

    async def stream(first: int) -> None:
        async with refusals.attach(make_client(1, REQUEST_TIMEOUT_S)) as client:
            sent = 0
            while time.perf_counter() < deadline:
                text = SOAK_TEXTS[(first + sent) % len(SOAK_TEXTS)]  # a different sentence each time
                result = await speak(client, server, text, first + sent * streams, REQUEST_TIMEOUT_S)
                results.append(result)
                sent += 1
                if result.error is not None:  # a 429: its Retry-After; anything else: a second, not a busy loop
                    pause = refusals.last_s() if result.status == 429 else 1.0
                    await asyncio.sleep(min(pause, deadline - time.perf_counter()))

    started = time.perf_counter()
    sampler = asyncio.create_task(sample_process(pid, every_s, samples, started))
    await asyncio.gather(*(stream(i) for i in range(streams)))
    sampler.cancel()
    samples.append(ProcSample(time.perf_counter() - started, rss_mib(pid), open_sockets(pid)))  # the end itself
    return results, refusals, samples


def run_soak(server: Server, pid: int, cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str | None]]:
    """Phase 2; returns its numbers and the Retry-After of each of its 429s."""
    warmup_s, soak_s = cfg["warmup_s"], cfg["soak_s"]
    results, refusals, samples = asyncio.run(
        _soak(server, pid, cfg["soak_streams"], warmup_s + soak_s, cfg["rss_every_s"])
    )
    served = [r for r in results if outcome(r) == "200"]
    began = min(r.sent_at for r in results)
    soak = {
        "streams": cfg["soak_streams"],
        "warmup_s": warmup_s,
        "seconds": soak_s,
        # A request still running at the end is read to its end, so the soak can last a little longer.
        "wall_s": max(r.sent_at + (r.end_s or 0.0) for r in results) - began,
        "requests": len(results),
        "outcomes": tally(results),
        "completed_after_warmup": sum(r.sent_at - began >= warmup_s for r in served),
        "error_samples": error_samples(results),
        "audio_s_served": sum(r.audio_s for r in served),
        "first_byte_200_s": spread([r.ttfa_s for r in served if r.ttfa_s is not None]),
        "rss": rss_trend(samples, warmup_s, soak_s),
        "rss_samples": [asdict(s) for s in samples],
    }
    return soak, refusals.retry_after


def drain(server: Server) -> dict[str, Any]:
    """SIGTERM the server and wait for it; what it exited with, how long it took, whether it shut down in full."""
    if server.proc is None or server.log_path is None:
        raise RuntimeError("the soak bench drains only a server it started")
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = server.proc.wait(timeout=DRAIN_LIMIT_S)
    except subprocess.TimeoutExpired:
        code = None  # running() kills it on the way out
    seconds = time.monotonic() - started
    shut_down = SHUTDOWN_LINE in server.log_path.read_text(errors="replace")
    return {
        "exit_code": code,
        "seconds": seconds,
        "shutdown_complete": shut_down,
        "graceful": code in GRACEFUL_EXITS and shut_down,
    }


def ensure_open_files(clients: int) -> int:
    """Raise the open-file limit (the server inherits it) to one socket per caller and room to spare; the limit."""
    needed = clients + 256  # the interpreter's, the model's and the database's own files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ChorusError(f"{clients} clients need {needed} open files; the hard limit (ulimit -Hn) is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=500, help="flood: callers released at once (500)")
    parser.add_argument("--max-slots", type=int, default=16, help="the server's worker.max_slots (16)")
    parser.add_argument("--soak-s", type=float, default=600.0, help="soak: seconds judged, after the warm-up (600)")
    parser.add_argument("--soak-streams", type=int, default=8, help="soak: callers asking back to back (8)")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="soak: first seconds, not judged (30)")
    parser.add_argument("--rss-every-s", type=float, default=5.0, help="soak: seconds between RSS samples (5)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for soak.json/.md/.png")
    parser.add_argument("--quick", action="store_true", help="CI run: 40 clients, 5 s warm-up, 20 s soak")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    cfg: dict[str, Any] = {
        "clients": 40 if quick else args.clients,
        "max_slots": args.max_slots,
        "soak_s": 20.0 if quick else args.soak_s,
        "soak_streams": args.soak_streams,
        "warmup_s": 5.0 if quick else args.warmup_s,
        "rss_every_s": args.rss_every_s,
        "quick": quick,
    }
    if not 1 <= cfg["clients"] <= MAX_REQUESTS or not 1 <= cfg["max_slots"] <= 4096:
        raise ChorusError(f"need 1 <= --clients <= {MAX_REQUESTS} and 1 <= --max-slots <= 4096")
    if not 1 <= cfg["soak_streams"] <= 256 or cfg["warmup_s"] < 0 or cfg["rss_every_s"] <= 0:
        raise ChorusError("need 1 <= --soak-streams <= 256, --warmup-s >= 0 and --rss-every-s > 0")
    if cfg["soak_s"] < 2 * cfg["rss_every_s"]:
        raise ChorusError("--soak-s must hold at least 3 RSS samples (2 x --rss-every-s)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = settings(args)
    open_files = ensure_open_files(cfg["clients"])
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="chorus-soak-") as tmp:
        config = Path(tmp) / "soak.yaml"
        config.write_text(yaml.safe_dump({"data_dir": f"{tmp}/data", "worker": {"max_slots": cfg["max_slots"]}}))
        server_settings = load_settings(config)  # what the server reads too: the same file and environment
        if server_settings.worker.max_slots != cfg["max_slots"]:
            raise ChorusError("CHORUS_WORKER__MAX_SLOTS in the environment overrides --max-slots; unset it")
        cfg |= {
            "queue_limit": server_settings.server.queue_limit,
            "max_queue_wait_s": server_settings.server.max_queue_wait_s,
            "open_files_limit": open_files,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "flood_text": FLOOD_TEXT,
            "soak_texts": list(SOAK_TEXTS),
        }
        with running("chorus", chorus_args=["--config", str(config)], log_dir=Path(tmp)) as server:
            if server.proc is None:
                raise RuntimeError("running() started no process")
            pid = server.proc.pid
            print(f"server ready in {server.startup_s:.1f} s; flood: {cfg['clients']} callers at once", flush=True)
            flood, flood_refusals = run_flood(server, pid, cfg["clients"])
            print(f"flood: {flood['outcomes']}; soak: {cfg['warmup_s'] + cfg['soak_s']:g} s", flush=True)
            soak, soak_refusals = run_soak(server, pid, cfg)
            server_info = {
                "command": describe(server),
                "startup_s": server.startup_s,
                "stats_after_soak": engine_stats(server),
            }
            ended = drain(server)
            if not ended["graceful"]:
                print(server.log_tail())
    report: dict[str, Any] = {
        "command": (
            f"chorus bench-soak --clients {cfg['clients']} --max-slots {cfg['max_slots']} --soak-s {cfg['soak_s']:g} "
            f"--soak-streams {cfg['soak_streams']} --warmup-s {cfg['warmup_s']:g} --rss-every-s {cfg['rss_every_s']:g}"
        ),
        "started_at": started_at,
        "machine": _machine(),
        "settings": cfg,
        "server": server_info,
        "flood": flood,
        "soak": soak,
        "drain": ended,
        "retry_after": flood_refusals + soak_refusals,
    }
    report["checks"] = checks(report)
    report["passed"] = all(held is not False for _, held, _ in report["checks"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (args.out / "soak.md").write_text(render_markdown(report))
    write_plot(report, args.out / "soak.png")
    print(conditions(report))
    print(text_table(["requirement", "held", "measured"], [[n, held_text(h), d] for n, h, d in report["checks"]]))
    print(text_table(["measure", "value"], numbers(report)))
    failed = [name for name, held, _ in report["checks"] if held is False]
    print(f"FAILED: {'; '.join(failed)}" if failed else "every requirement held", f"(results in {args.out})")
    return 1 if failed else 0
