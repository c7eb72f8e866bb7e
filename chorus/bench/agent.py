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
import itertools
import json
import os
import random
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets
import yaml

from chorus.agent.segmenter import SegmenterConfig, TextSegmenter
from chorus.bench.agent_report import Trace, render_markdown, session_metrics, summarize, write_plot
from chorus.bench.agent_timestamps import (
    RATE,
    SESSION_TIMEOUT_S,
    TEST_SPLIT,
    VOICE,
    spoken_with_words,
    timestamp_accuracy,
)
from chorus.bench.corpus import text_for
from chorus.bench.main import _machine
from chorus.bench.servers import Server, describe, running
from chorus.bench.workloads import percentile, wait_idle, warm_up
from chorus.client import SpeechSession
from chorus.config import RealtimeConfig
from chorus.timestamps import split_words

BYTES_PER_S = RATE * 2.0
TOKEN_RATE_TPS = (15.0, 40.0)
JITTER_SHAPE = 4.0  # gamma shape of the gaps between tokens: coefficient of variation 1/sqrt(4) = 0.5
ARRIVAL_S = 10.0  # N sessions arrive one every ARRIVAL_S / N s (as `chorus bench`'s live streams): ~N at once
BARGE_IN_AFTER_S = 1.5  # audio received before the client interrupts
LATE_GRACE_S = 0.25  # after response.audio.done (cancelled), keep reading this long for stale audio
IDLE_LIMIT_S = 30.0
_TOKEN = re.compile(r"\s*[A-Za-z']+|\s*[^\sA-Za-z']")
_SENTENCE_END = ".!?"
DEFINITIONS = [
    "p50/p95 are nearest-rank over a run's sessions (sentence figures: over its sentences), so with 20 or fewer "
    "values p95 is the largest; a session that got no audio counts as infinitely late.",
    "first token: when the session's first token was sent. A chorus session is connected (and its session.update "
    "answered) before that, as an agent keeps its session open; the baseline opens its loopback HTTP connection "
    "with its first request.",
    "chorus sessions ask for word timestamps (they locate each sentence's audio); the baseline's plain POSTs "
    "cannot carry them, so chorus does that work on top (see server CPU per second of audio).",
    "first clause end (chorus): when the token ending the first segment the server speaks was sent — the first "
    "sentence end or the first `, ; :` after >= 3 words (the server's segmenter, run on the same tokens); the server "
    "can cut only once the next token's leading space arrives, and that wait is inside the figure. Baseline: the "
    "first sentence end (its first request).",
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


@dataclass(frozen=True)
class Plan:
    """One session's text and token schedule; the same for both systems."""

    index: int
    text: str
    tokens: list[str]
    due_s: list[float]  # when each token is sent, seconds after the session's start
    rate_tps: float
    sentence_tokens: list[int]  # the token ending each sentence
    sentence_words: list[int]
    segment_token: int  # chorus: the token ending the first segment the server speaks


def llm_tokens(text: str) -> list[str]:
    """GPT-like pieces: a word of up to 6 letters whole with its leading space (" train"), a longer one in pieces of
    4 letters (" gran", "dmot", "her"), punctuation on its own (".", ","): about 4 characters a token."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        piece = match.group()
        lead = len(piece) - len(piece.lstrip())
        if len(piece) - lead <= 6:
            out.append(piece)
            continue
        head, rest = piece[: lead + 4], piece[lead + 4 :]
        out += [head, *(rest[i : i + 4] for i in range(0, len(rest), 4))]
    return out


def first_segment_token(tokens: list[str]) -> int:
    """The token that ends the first segment chorus's segmenter cuts (with the server's default settings)."""
    cfg = RealtimeConfig()
    seg = TextSegmenter(SegmenterConfig(cfg.first_min_words, cfg.min_words, cfg.max_words, cfg.idle_s))
    for i, token in enumerate(tokens):
        if seg.append(token, 0.0):
            if not seg.buffered.strip():
                return i  # an eager cut: this token ended the segment
            return i - 1  # cut just before this token's leading whitespace: the segment ended with the one before
    return len(tokens) - 1  # only the flush speaks it


def make_plan(index: int, rng: random.Random) -> Plan:
    text = text_for(index)
    tokens = llm_tokens(text)
    rate = rng.uniform(*TOKEN_RATE_TPS)
    due, at = [], 0.0
    for _ in tokens:
        due.append(at)
        at += rng.gammavariate(JITTER_SHAPE, 1.0 / (JITTER_SHAPE * rate))
    ends = [i for i, t in enumerate(tokens) if any(c in _SENTENCE_END for c in t)]
    if not ends or ends[-1] != len(tokens) - 1:
        ends.append(len(tokens) - 1)
    bounds = [-1, *ends]
    words = [len(split_words("".join(tokens[a + 1 : b + 1]))) for a, b in itertools.pairwise(bounds)]
    return Plan(index, text, tokens, due, rate, ends, words, first_segment_token(tokens))


def new_trace(system: str, plan: Plan) -> Trace:
    clause = plan.segment_token if system == "chorus" else plan.sentence_tokens[0]
    return Trace(system, plan.index, plan.rate_tps, clause, plan.sentence_tokens, plan.sentence_words, BYTES_PER_S)


async def feed(plan: Plan, trace: Trace, send: Callable[[int, str], Awaitable[None]], stop: asyncio.Event) -> bool:
    """Send the plan's tokens on schedule; False when stopped (barge-in) before the last."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, (token, due) in enumerate(zip(plan.tokens, plan.due_s, strict=True)):
        delay = start + due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop.is_set():
            return False
        trace.sent.append(loop.time())
        await send(i, token)
    return True


class BargeIn:
    """Interrupt once ``after_s`` of audio has arrived (None: never)."""

    def __init__(self, after_s: float | None) -> None:
        self.after_bytes = None if after_s is None else after_s * BYTES_PER_S
        self.received = 0
        self.stop = asyncio.Event()

    def due(self, size: int) -> bool:
        self.received += size
        return self.after_bytes is not None and not self.stop.is_set() and self.received >= self.after_bytes


async def chorus_session(server: Server, plan: Plan, barge: BargeIn) -> Trace:
    trace = new_trace("chorus", plan)
    trace.requests = 1
    loop = asyncio.get_running_loop()
    feeding: asyncio.Task[None] | None = None
    try:
        async with (
            asyncio.timeout(SESSION_TIMEOUT_S),
            SpeechSession.connect(server.base_url, voice=VOICE, sample_rate=RATE, timestamps=True) as tts,
        ):

            async def talk() -> None:
                if await feed(plan, trace, lambda _, token: tts.append(token), barge.stop):
                    await tts.flush()

            feeding = asyncio.create_task(talk())
            events = tts.events()
            async for event in events:
                if event.type == "audio":
                    trace.pieces.append((event.received_at, 0, len(event.audio)))
                    if barge.due(len(event.audio)):
                        barge.stop.set()
                        trace.cancel_at = loop.time()
                        await tts.cancel()
                elif event.type == "response.timestamps":
                    trace.words += event.words
                elif event.type == "error":
                    trace.errors.append(str(event.data.get("error", event.data))[:200])
                elif event.type == "response.audio.done":
                    trace.done_at, trace.done_status = event.received_at, str(event.data.get("status"))
                    trace.ends[0] = event.received_at
                    break
            if trace.cancel_at is not None:  # stale audio after the done would be a server bug: look for it
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LATE_GRACE_S):
                        async for event in events:
                            if event.type == "audio":
                                trace.pieces.append((event.received_at, 0, len(event.audio)))
            await feeding
    except TimeoutError:
        trace.errors.append(f"timeout after {SESSION_TIMEOUT_S:g} s")
    except (websockets.WebSocketException, OSError, RuntimeError) as e:
        trace.errors.append(f"{type(e).__name__}: {e}"[:200])
    finally:
        if feeding is not None:
            feeding.cancel()
    if trace.done_status not in ("completed", "cancelled"):
        trace.errors.append(f"response.audio.done status {trace.done_status}")
    trace.requests_ok = int(not trace.errors and trace.done_status is not None)
    return trace


async def baseline_session(server: Server, plan: Plan, barge: BargeIn) -> Trace:
    trace = new_trace("baseline", plan)
    loop = asyncio.get_running_loop()
    posts: list[asyncio.Task[None]] = []
    interrupted = asyncio.Event()

    async def post(client: httpx.AsyncClient, k: int, sentence: str) -> None:
        body = {"model": "tts-1", "input": sentence, "voice": VOICE, "response_format": "pcm"}
        try:
            async with client.stream("POST", f"{server.base_url}/v1/audio/speech", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:200]
                    trace.errors.append(f"HTTP {response.status_code}: {detail}")
                    return
                async for chunk in response.aiter_raw():
                    trace.pieces.append((loop.time(), k, len(chunk)))
                    if barge.due(len(chunk)):
                        barge.stop.set()
                        trace.cancel_at = loop.time()
                        interrupted.set()
            trace.requests_ok += 1
        except httpx.HTTPError as e:
            trace.errors.append(f"{type(e).__name__}: {e}"[:200])
        finally:
            trace.ends[k] = loop.time()

    async with httpx.AsyncClient(timeout=httpx.Timeout(SESSION_TIMEOUT_S, connect=10.0), trust_env=False) as client:
        text = ""

        async def send(i: int, token: str) -> None:
            nonlocal text
            text += token
            if i in plan.sentence_tokens:
                posts.append(asyncio.create_task(post(client, len(posts), text.strip())))
                trace.requests += 1
                text = ""

        async def abandon() -> None:
            await interrupted.wait()
            for task in posts:
                task.cancel()
            await asyncio.gather(*posts, return_exceptions=True)
            trace.done_at, trace.done_status = loop.time(), "cancelled"

        watcher = asyncio.create_task(abandon())
        try:
            async with asyncio.timeout(SESSION_TIMEOUT_S):
                await feed(plan, trace, send, barge.stop)
                await asyncio.gather(*posts, return_exceptions=True)
                if trace.cancel_at is not None:
                    await watcher
        except TimeoutError:
            trace.errors.append(f"timeout after {SESSION_TIMEOUT_S:g} s")
        finally:
            watcher.cancel()
            for task in posts:
                task.cancel()
    return trace


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
