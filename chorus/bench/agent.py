"""``chorus bench-agent``: a voice agent's view of chorus — LLM tokens in, speech out — against the client one
could build today from sentence-at-a-time ``POST /v1/audio/speech`` requests.

One ``chorus serve`` (bundled voice, ``server.output_sample_rate`` 22050 — the voice's own rate, so neither route
resamples — an empty data folder, all else default) on 127.0.0.1. For each N in ``--sessions`` and each repeat,
interleaved (chorus then baseline, the next time baseline then chorus), N sessions arrive evenly over
``--arrival-s`` (10 s by default, as ``chorus bench``'s live streams: ~N at once at the peak, since each lasts
~12 s; 2 s with --quick). Each gets a ~3-sentence corpus paragraph (``corpus.text_for``: no digits, different per
session and repeat) cut into LLM-like tokens (~4 characters: a short word whole with its leading space, a longer
one in 4-letter pieces, punctuation on its own), sent at a rate drawn per session from 15–40 tokens/s with
gamma-jittered gaps (seeded; both systems get the same schedule). Playback is simulated, never played.

- **chorus**: one ``WS /v1/audio/speech/stream`` session per paragraph (``chorus.client.SpeechSession``; voice joe,
  22050 Hz pcm, timestamps on): every token is an ``input_text.append``, then ``input_text.flush``.
- **baseline**: the client buffers tokens until a sentence ends (the token carrying ``.``/``!``/``?``), then POSTs
  that sentence (``response_format: pcm``, streamed; one httpx client per session; a sentence is posted as soon as
  its text is complete, even while the previous one still streams) and plays the sentences in order.

Measured per session, on the client's clock: first token → first audio; first clause end → first audio (chorus: the
send time of the token that ends the first segment the server speaks — the first sentence end, or the first clause
mark ``, ; :`` after >= 3 words, found by running the server's own ``TextSegmenter`` with the server's settings; the
server cuts only when the next token's leading space arrives, and that wait is part of the figure. Baseline: the
first sentence end); sentence end → its audio for every later sentence (chorus: the arrival of the audio piece
holding the sample where the sentence's first word starts, from ``response.timestamps``; baseline: the sentence's
first byte); playback underruns from first audio on (``player.simulate``; the baseline plays sentence k only after
sentence k-1 has played to its end); audio seconds and errors. A separate barge-in pass (same N, texts, schedules)
interrupts every session once it has received 1.5 s of audio: chorus sends ``response.cancel`` (measured: cancel →
last audio frame received, → ``response.audio.done``); the baseline closes its streams (cancel → last byte, → all
closed: client-side, so near zero by construction). Then ``/v1/stats`` is polled until no slot is active and nobody
waits: the time from the last cancel is reported (slots freed).

Word timestamps are checked on ``--timestamp-sentences`` corpus sentences of a test split (odd indices; the even
ones were the development split): each spoken in its own session, its word times compared with a pocketsphinx
forced alignment of the received audio (bundled en-us models); sentences with a word missing from the aligner's
dictionary, or whose alignment fails, are counted and reported, not compared.

Results: ``<out>/agent.json`` (every session's numbers and the conditions), ``agent.md`` (printed at the end),
``agent.png``. The exit code is 1 when any session or request failed. ``--quick`` (CI, ~25 s on 2 cores): N=2, one
repeat, 3 timestamp sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from chorus.bench.agent_report import Trace, render_markdown, session_metrics, summarize, write_plot
from chorus.bench.agent_sessions import (
    JITTER_SHAPE,
    TOKEN_RATE_TPS,
    BargeIn,
    Plan,
    baseline_session,
    chorus_session,
    make_plan,
)
from chorus.bench.agent_timestamps import (
    RATE,
    SESSION_TIMEOUT_S,
    TEST_SPLIT,
    VOICE,
    spoken_with_words,
    timestamp_accuracy,
)
from chorus.bench.main import _machine
from chorus.bench.servers import Server, describe, running
from chorus.bench.workloads import percentile, wait_idle, warm_up

ARRIVAL_S = 10.0  # N sessions arrive one every ARRIVAL_S / N s (as `chorus bench`'s live streams): ~N at once
BARGE_IN_AFTER_S = 1.5  # audio received before the client interrupts
IDLE_LIMIT_S = 30.0
DEFINITIONS = [
    "p50/p95 are nearest-rank over a run's sessions (sentence figures: over its sentences), so with 20 or fewer "
    "values p95 is the largest; a session that got no audio counts as infinitely late.",
    "first token: when the session's first token was sent. A chorus session is connected (and its session.update "
    "answered) before that, as an agent keeps its session open; the baseline opens its loopback HTTP connection "
    "with its first request.",
    "chorus sessions ask for word timestamps (they locate each sentence's audio); the baseline's plain POSTs "
    "cannot carry them, so chorus does that work on top (see server CPU per second of audio).",
    "first clause end (chorus): when the token ending the first segment the server speaks was sent — the first "
    "sentence end or the first `, ; :` after >= 3 words (the server's segmenter, run on the same tokens: it cuts the "
    "first segment as soon as the token that surely ends it arrives, later ones when the next token's leading "
    "space arrives). Baseline: the first sentence end (its first request).",
    "sentence end → its audio: from sending the token that ends sentence k (k >= 2) to the arrival of its first "
    "audio (chorus: the piece holding the first word's start_s from response.timestamps; baseline: the sentence's "
    "first byte). Negative when chorus spoke a sentence's first words before its end (a later segment may end at "
    "a clause mark after >= 6 words, or after 20 words). Not a gap measure: sentence k is needed only once the "
    "ones before it have played (seconds later), and the server schedules against that deadline (chorus opens a "
    "session's next segment one ahead, with plays_at = when the client's audio runs out; a baseline sentence is a "
    "newcomer). A late sentence is an underrun.",
    "underruns: from each session's first audio, played in real time; the text is complete well before its speech "
    "would be, so every stall is the server's (or the baseline's ordering). Baseline sentence k plays only after "
    "k-1 ended.",
    "barge-in: a separate pass with every session interrupted once it has received 1.5 s of audio. chorus: "
    "response.cancel → the last binary audio frame received (0 when none came after the cancel) and → "
    "response.audio.done (cancelled). Baseline: the client abandons its streams, so audio after the cancel is only "
    "what was already being read; 'done' is every stream closed. Then /v1/stats is polled (every 20 ms) until "
    "active_slots and waiting are 0: seconds after the last cancel.",
]


async def _loop_lag(into: list[float]) -> None:
    """How late the client's event loop wakes (a busy client would inflate every time it measures)."""
    loop = asyncio.get_running_loop()
    while True:
        at = loop.time()
        await asyncio.sleep(0.01)
        into.append(loop.time() - at - 0.01)


async def _idle_at(server: Server) -> float | None:
    """Poll /v1/stats until no slot is active and nobody waits: the loop time it was first seen (None: not seen)."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        deadline = loop.time() + IDLE_LIMIT_S
        while loop.time() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                stats = (await client.get(server.base_url + "/v1/stats")).json()
                if stats["active_slots"] == 0 and stats["waiting"] == 0:
                    return loop.time()
            await asyncio.sleep(0.02)
    return None


async def _pass(server: Server, system: str, plans: list[Plan], barge_in: bool, arrival_s: float) -> dict[str, Any]:
    """N sessions, staggered; with ``barge_in`` each is interrupted and the server's slots watched until free."""
    session = chorus_session if system == "chorus" else baseline_session
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    lag_task = asyncio.create_task(_loop_lag(lags))
    pending = len(plans)
    settled = asyncio.Event()  # every session has been interrupted (or ended without)

    async def one(i: int, plan: Plan) -> Trace:
        nonlocal pending
        await asyncio.sleep(i * arrival_s / len(plans))
        barge = BargeIn(BARGE_IN_AFTER_S if barge_in else None)
        task = asyncio.create_task(session(server, plan, barge))
        stopped = asyncio.create_task(barge.stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        pending -= 1
        if pending == 0:
            settled.set()
        return await task

    started, cpu0, server_cpu0 = loop.time(), time.process_time(), server.cpu_seconds()
    sessions = [asyncio.create_task(one(i, p)) for i, p in enumerate(plans)]
    idle: asyncio.Task[float | None] | None = None
    if barge_in:
        await settled.wait()
        idle = asyncio.create_task(_idle_at(server))
    traces = list(await asyncio.gather(*sessions))
    wall = loop.time() - started
    cpu = time.process_time() - cpu0
    server_cpu1 = server.cpu_seconds()
    lag_task.cancel()
    idle_s = None
    cancels = [t.cancel_at for t in traces if t.cancel_at is not None]
    if idle is not None:
        idle_at = await idle
        idle_s = round(idle_at - max(cancels), 4) if idle_at is not None and cancels else None
    return {
        "system": system,
        "kind": "barge_in" if barge_in else "stream",
        "wall_s": round(wall, 3),
        "client_cpu_s": round(cpu, 3),
        "server_cpu_s": None if server_cpu0 is None or server_cpu1 is None else round(server_cpu1 - server_cpu0, 3),
        "client_loop_lag_p99_s": percentile(lags, 99),
        "client_loop_lag_max_s": max(lags, default=None),
        "idle_after_s": idle_s,
        "sessions": [session_metrics(t) for t in traces],
    }


# -- the command -----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="8,16", help="concurrent sessions N, comma-separated (default 8,16)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--timestamp-sentences", type=int, default=24, help="test-split sentences aligned (24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the token pacing (default 0)")
    parser.add_argument(
        "--arrival-s",
        type=float,
        default=ARRIVAL_S,
        help="sessions arrive evenly over this many seconds (default 10: ~N at once, as bench's live streams)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for agent.json/.md/.png")
    parser.add_argument("--quick", action="store_true", help="CI run: N=2, one repeat, 3 timestamp sentences")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    sizes = [2] if quick else sorted({int(x) for x in str(args.sessions).split(",") if x.strip()})
    cfg: dict[str, Any] = {
        "sessions": sizes,
        "repeats": 1 if quick else int(args.repeats),
        "timestamp_sentences": 3 if quick else int(args.timestamp_sentences),
        "seed": int(args.seed),
        "quick": quick,
        "voice": VOICE,
        "sample_rate": RATE,
        "token_rate_tps": list(TOKEN_RATE_TPS),
        "jitter_gamma_shape": JITTER_SHAPE,
        "stagger_s": 2.0 if quick else float(args.arrival_s),
        "barge_in_after_audio_s": BARGE_IN_AFTER_S,
        "session_timeout_s": SESSION_TIMEOUT_S,
    }
    if not sizes or sizes[0] < 1 or sizes[-1] > 256 or cfg["repeats"] < 1:
        raise ValueError("need 1 <= N <= 256 and --repeats >= 1")
    if not 0 <= cfg["timestamp_sentences"] <= len(TEST_SPLIT):
        raise ValueError(f"--timestamp-sentences must be 0..{len(TEST_SPLIT)}")
    return cfg


def _plans(cfg: dict[str, Any], repeat: int, n: int) -> list[Plan]:
    sizes: list[int] = cfg["sessions"]
    base = repeat * sum(sizes) + sum(sizes[: sizes.index(n)])  # a different text per session and repeat
    return [make_plan(base + i, random.Random(f"{cfg['seed']}/{repeat}/{n}/{i}")) for i in range(n)]


def _measure(server: Server, cfg: dict[str, Any], probe_s: float) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for repeat in range(cfg["repeats"]):
        for k, n in enumerate(cfg["sessions"]):
            plans = _plans(cfg, repeat, n)
            order = ["chorus", "baseline"] if (repeat + k) % 2 == 0 else ["baseline", "chorus"]
            for barge_in in (False, True):
                for system in order:
                    run = asyncio.run(_pass(server, system, plans, barge_in, cfg["stagger_s"]))
                    run |= {"n": n, "repeat": repeat, "order": order.index(system), "loadavg": os.getloadavg()}
                    wait_idle(server, probe_s, None)
                    run["server_stats_after"] = _stats(server)  # what admission control learned, the counters
                    runs.append(run)
                    bad = sum(s["errors"] for s in run["sessions"])
                    print(
                        f"repeat {repeat + 1}/{cfg['repeats']} N={n} {system} {run['kind']}: {run['wall_s']:.1f} s, "
                        f"{bad} error(s)",
                        flush=True,
                    )
    return runs


def _stats(server: Server) -> dict[str, Any] | None:
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            stats: dict[str, Any] = client.get(server.base_url + "/v1/stats").raise_for_status().json()
            return stats
    except (httpx.HTTPError, ValueError):
        return None


def _command(cfg: dict[str, Any]) -> str:
    if cfg["quick"]:
        return f"chorus bench-agent --quick --seed {cfg['seed']}"
    sizes = ",".join(str(n) for n in cfg["sessions"])
    return (
        f"chorus bench-agent --sessions {sizes} --repeats {cfg['repeats']} "
        f"--timestamp-sentences {cfg['timestamp_sentences']} --seed {cfg['seed']}"
    )


def run(args: argparse.Namespace) -> int:
    cfg = settings(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = _machine()
    server_config = {"server": {"output_sample_rate": RATE}}
    with tempfile.TemporaryDirectory(prefix="chorus-agent-") as tmp:
        config = Path(tmp) / "agent.yaml"
        config.write_text(yaml.safe_dump({"data_dir": f"{tmp}/data", **server_config}))
        with running("chorus", chorus_args=["--config", str(config)], log_dir=out / "logs-agent") as server:
            print(f"server ready in {server.startup_s:.1f} s", flush=True)
            probe_s = warm_up(server, 60.0)
            asyncio.run(spoken_with_words(server, "Hello there, this warms up the session route."))
            runs = _measure(server, cfg, probe_s)
            timestamps = timestamp_accuracy(server, cfg["timestamp_sentences"])
            server_info = {"command": describe(server), "config": server_config, "startup_s": server.startup_s}
    machine["loadavg_at_end"] = os.getloadavg()
    report: dict[str, Any] = {
        "command": _command(cfg),
        "started_at": started_at,
        "machine": machine,
        "server": server_info,
        "settings": cfg,
        "definitions": DEFINITIONS,
        "summary": summarize(runs, cfg["sessions"]),
        "timestamps": timestamps,
        "notes": _notes(runs),
        "runs": runs,
    }
    (out / "agent.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    text = render_markdown(report)
    (out / "agent.md").write_text(text)
    write_plot(report, out / "agent.png")
    print(text)
    failed = sum(s["errors"] for r in runs for s in r["sessions"])
    return 1 if failed else 0


def _notes(runs: list[dict[str, Any]]) -> list[str]:
    notes = []
    lag = max((r["client_loop_lag_max_s"] or 0.0 for r in runs), default=0.0)
    p99 = max((r["client_loop_lag_p99_s"] or 0.0 for r in runs), default=0.0)
    notes.append(
        f"client event-loop lag (how late a 10 ms timer fired): p99 up to {p99 * 1000:.0f} ms, at most "
        f"{lag * 1000:.0f} ms in any pass. Every time above is read by that loop, so a reading can be that much late."
    )
    cpu = [r["client_cpu_s"] / r["wall_s"] for r in runs if r["wall_s"]]
    if cpu:
        notes.append(f"the bench client used up to {max(cpu):.0%} of one core during a pass (the server had the rest).")
    unmeasured = sum(
        v is None for r in runs if r["kind"] == "stream" for s in r["sessions"] for v in s["sentence_to_audio_s"]
    )
    if unmeasured:
        notes.append(f"{unmeasured} sentence(s) had no measurable audio time (missing timestamps or audio).")
    return notes
