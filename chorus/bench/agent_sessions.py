"""The two clients of ``chorus bench-agent``: one paragraph fed as LLM-like tokens, either into a chorus voice-agent
session (``WS /v1/audio/speech/stream``) or, as the baseline, into one streamed ``POST /v1/audio/speech`` per
sentence. Both record what a listener would get (``Trace``); ``BargeIn`` interrupts them once enough audio came.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import websockets

from chorus.agent.session import new_segmenter
from chorus.bench.agent_report import Trace
from chorus.bench.agent_timestamps import RATE, SESSION_TIMEOUT_S, VOICE
from chorus.bench.corpus import text_for
from chorus.bench.servers import Server
from chorus.client import SpeechSession
from chorus.config import RealtimeConfig
from chorus.timestamps import split_words

BYTES_PER_S = RATE * 2.0
TOKEN_RATE_TPS = (15.0, 40.0)
JITTER_SHAPE = 4.0  # gamma shape of the gaps between tokens: coefficient of variation 1/sqrt(4) = 0.5
LATE_GRACE_S = 0.25  # after response.audio.done (cancelled), keep reading this long for stale audio
_TOKEN = re.compile(r"\s*[A-Za-z']+|\s*[^\sA-Za-z']")
_SENTENCE_END = ".!?"


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
    seg = new_segmenter(RealtimeConfig())
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
