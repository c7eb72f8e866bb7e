"""The two workloads, *burst* and *live*, and the numbers each measurement yields.

burst: N requests sent at the same instant; how soon does each start to speak, and how much audio per second of
wall time does the server produce while it works through them?

live: a stream arrives every 10/N s for a window, each wanting ~10 s of speech, so about N are in flight at once;
each is played back at real-time speed from its first byte, and every moment a listener would hear silence
(the player has played all it received and the stream has not ended) counts as an underrun.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from chorus.bench.client import StreamResult, make_client, speak
from chorus.bench.corpus import text_for
from chorus.bench.player import simulate
from chorus.bench.servers import Server

# Live streams are spread so that, on average, N are in flight: each lasts ~10 s of audio.
STREAM_SECONDS = 10.0
# Hard caps, whatever the options say, so a typo cannot start a run that never ends.
MAX_REQUESTS = 2000
IDLE_WAIT_S = 60.0
PROBE_TEXT = "Ready."


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: always one of the measured values (a failed request counts as +inf)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class Measurement:
    """One workload at one size, once. TTFA percentiles are None when they fall on a request that got no audio
    (a 429 counts as no audio: refused callers are part of the percentile)."""

    workload: str
    n: int
    requests: int
    ok: int
    errors: int  # failures other than 429 (timeouts, 5xx, broken streams)
    rejected_429: int
    ttfa_p50_s: float | None
    ttfa_p95_s: float | None
    audio_s: float
    wall_s: float
    audio_per_wall_s: float
    underruns: int
    streams_with_underruns: int
    stall_s: float
    client_cpu_s: float
    server_cpu_s: float | None
    repeat: int = 0
    ttfa_ok_p95_s: float | None = None  # over the requests that got audio
    reject_p95_s: float | None = None  # how long a 429 took to come back
    # ETA error: first audio as it happened minus as predicted when the request queued (X-Queue-ETA-S).
    eta_count: int = 0
    eta_error_p50_s: float | None = None  # median of the signed error (bias)
    eta_abs_error_p95_s: float | None = None
    server_cpu_per_audio_s: float | None = None
    error_samples: list[str] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def eta_errors(results: list[StreamResult]) -> list[float]:
    """Actual minus predicted first audio (seconds) of every served request that came with a prediction."""
    return [r.ttfa_s - r.eta_s for r in results if r.ok and r.ttfa_s is not None and r.eta_s is not None]


def summarize(
    workload: str,
    n: int,
    results: list[StreamResult],
    client_cpu_s: float,
    server_cpu_s: float | None,
    repeat: int = 0,
) -> Measurement:
    ttfas = [r.ttfa_s if r.ok and r.ttfa_s is not None else math.inf for r in results]
    served = [r.ttfa_s for r in results if r.ok and r.ttfa_s is not None]
    rejects = [r.end_s for r in results if r.status == 429 and r.end_s is not None]
    start = min(r.sent_at for r in results)
    finish = max(r.sent_at + (r.end_s or 0.0) for r in results)
    wall = max(finish - start, 1e-9)
    audio = sum(r.audio_s for r in results if r.ok)
    streams: list[dict[str, Any]] = []
    underruns = stalled_streams = 0
    stall = 0.0
    for r in results:
        play = simulate(r.arrivals)
        underruns += play.underruns
        stalled_streams += play.underruns > 0
        stall += play.stall_s
        streams.append(
            {
                "index": r.index,
                "start_s": round(r.sent_at - start, 4),
                "status": r.status,
                "error": r.error,
                "ttfa_s": r.ttfa_s,
                "eta_s": r.eta_s,
                "end_s": r.end_s,
                "audio_s": round(r.audio_s, 4),
                "chunks": len(r.arrivals),
                "underruns": play.underruns,
                "stall_s": round(play.stall_s, 4),
                "first_stall_at_s": play.first_stall_at_s,
            }
        )
    errors = [r.error for r in results if r.error is not None and r.status != 429]
    eta = eta_errors(results)
    return Measurement(
        workload=workload,
        n=n,
        requests=len(results),
        ok=sum(r.ok for r in results),
        errors=len(errors),
        rejected_429=sum(r.status == 429 for r in results),
        ttfa_p50_s=_finite(percentile(ttfas, 50)),
        ttfa_p95_s=_finite(percentile(ttfas, 95)),
        audio_s=audio,
        wall_s=wall,
        audio_per_wall_s=audio / wall,
        underruns=underruns,
        streams_with_underruns=stalled_streams,
        stall_s=stall,
        client_cpu_s=client_cpu_s,
        server_cpu_s=server_cpu_s,
        repeat=repeat,
        ttfa_ok_p95_s=percentile(served, 95),
        reject_p95_s=percentile(rejects, 95),
        eta_count=len(eta),
        eta_error_p50_s=percentile(eta, 50),
        eta_abs_error_p95_s=percentile([abs(e) for e in eta], 95),
        server_cpu_per_audio_s=server_cpu_s / audio if server_cpu_s is not None and audio > 0 else None,
        error_samples=sorted(set(errors))[:3],
        streams=streams,
    )


async def _burst(server: Server, n: int, timeout_s: float) -> list[StreamResult]:
    async with make_client(n, timeout_s) as client:
        jobs = [speak(client, server, text_for(i), i, timeout_s) for i in range(n)]
        return list(await asyncio.gather(*jobs))


async def _live(server: Server, n: int, window_s: float, timeout_s: float) -> list[StreamResult]:
    interval = STREAM_SECONDS / n
    count = min(MAX_REQUESTS, max(1, math.ceil(window_s / interval - 1e-9)))
    async with make_client(count, timeout_s) as client:
        t0 = time.perf_counter()
        tasks: list[asyncio.Task[StreamResult]] = []
        for i in range(count):
            # Sleep to each arrival's absolute time, so a slow loop iteration does not push later arrivals back.
            delay = t0 + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(speak(client, server, text_for(i), i, timeout_s)))
        return list(await asyncio.gather(*tasks))


def measure(
    server: Server, workload: str, n: int, *, window_s: float, timeout_s: float, repeat: int = 0
) -> Measurement:
    """Run one workload at size ``n`` against ``server`` and summarize it."""
    if not 1 <= n <= MAX_REQUESTS:
        raise ValueError(f"size {n} is outside 1..{MAX_REQUESTS}")
    cpu0, server_cpu0 = time.process_time(), server.cpu_seconds()
    if workload == "burst":
        results = asyncio.run(_burst(server, n, timeout_s))
    elif workload == "live":
        results = asyncio.run(_live(server, n, window_s, timeout_s))
    else:
        raise ValueError(f"unknown workload {workload!r}")
    server_cpu1 = server.cpu_seconds()
    server_cpu = None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
    return summarize(workload, n, results, time.process_time() - cpu0, server_cpu, repeat)


def _probe_s(client: httpx.Client, server: Server) -> float:
    """Seconds for one tiny request, read to its end."""
    started = time.perf_counter()
    if server.kind == "piper":
        client.post(server.base_url + "/synthesize", json={"text": PROBE_TEXT}).raise_for_status()
    else:
        body = {"model": "tts-1", "input": PROBE_TEXT, "voice": "alloy", "response_format": "pcm"}
        client.post(server.base_url + "/v1/audio/speech", json=body).raise_for_status()
    return time.perf_counter() - started


def warm_up(server: Server, timeout_s: float) -> float:
    """Two short requests, so model sessions and thread pools exist before anything is timed; returns the probe
    time of the idle server, the yardstick ``wait_idle`` uses for servers that cannot say whether they are busy."""
    asyncio.run(_burst(server, 2, timeout_s))
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        return min(_probe_s(client, server) for _ in range(2))


def wait_idle(server: Server, idle_probe_s: float, after: Measurement | None) -> None:
    """Wait (bounded) until requests of the last measurement no longer run, so they do not slow the next one."""
    deadline = time.monotonic() + IDLE_WAIT_S
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if server.kind == "chorus":
                    # chorus reports its running and waiting requests; aborted ones leave their slot within a step.
                    health = client.get(server.base_url + "/health").json()
                    if health.get("active_slots", 0) == 0 and health.get("waiting", 0) == 0:
                        return
                else:
                    # Piper's Flask server cannot cancel work: a request the client gave up on still runs. Only
                    # then is there anything to wait for; a probe as fast as on the idle server says it is done.
                    if after is None or not any("timeout" in (s["error"] or "") for s in after.streams):
                        return
                    if _probe_s(client, server) <= max(0.5, 3 * idle_probe_s):
                        return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
