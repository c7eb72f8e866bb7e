"""A voice-agent session: text arrives as fragments, audio leaves as one continuous stream.

Tasks joined by queues, so that no one of them waits on another's slow part:
- the route's receive loop calls :meth:`AgentSession.handle` for each client message; text goes into the
  :class:`~chorus.agent.segmenter.TextSegmenter`, whose ready segments are queued;
- the *ticker* releases segments that became ready by idleness (an LLM that paused mid-sentence);
- the *opener* turns each queued segment into an engine request (at most one ahead of the one playing), with
  ``plays_at`` set to when the client's audio runs out: the engine schedules it against that deadline, not as
  a newcomer's first audio;
- the *player* streams each request's audio in order through one :class:`SeamJoiner` (crossfaded seams), the
  utterance's resampler and encoder, and the outbox; with timestamps on, word times go out as they are final;
- the *sender* (:class:`~chorus.agent.outbox.Outbox`) alone writes to the socket. A barge-in empties it, so at
  most the frame already being written reaches the client after ``response.cancel``.

Every segment is an ordinary speech request: keys, tenant voices, per-key concurrency, watermark and the audit
log apply to it as to ``POST /v1/audio/speech``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from chorus.agent.joiner import SeamJoiner
from chorus.agent.outbox import Frame, Outbox, Utterance
from chorus.agent.protocol import SessionSettings, TextAppend, apply_update, parse_message
from chorus.agent.segmenter import SegmenterConfig, TextSegmenter
from chorus.audit import SynthesisReceipt
from chorus.config import RealtimeConfig, Settings
from chorus.engine.request import RequestOutput
from chorus.errors import ChorusError, InvalidRequestError, QueueFullError
from chorus.server.auth import Principal
from chorus.speech import SpeechOrder, VoiceResolver, synthesis_params
from chorus.timestamps import WordTimer, spread_words

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Segment:
    utterance: Utterance
    text: str


@dataclass(eq=False)
class End:
    utterance: Utterance


Item = Segment | End


class SegmentStream(Protocol):
    """One segment's outputs as a session reads them: a :class:`chorus.speech.SpeechStream`, or its remote twin."""

    receipt: SynthesisReceipt
    audio_seconds: float

    def __aiter__(self) -> AsyncIterator[RequestOutput]: ...

    def abort(self) -> None: ...


class SpeechSource(Protocol):
    """Where a session's segments are spoken: the process's :class:`chorus.speech.SpeechService` in chorus serve,
    engine replicas behind the Ray Serve ingress (:mod:`chorus.deploy.ray_app`)."""

    @property
    def voices(self) -> VoiceResolver: ...

    async def open(self, order: SpeechOrder) -> SegmentStream: ...


@dataclass
class SessionContext:
    speech: SpeechSource
    principal: Principal
    config: RealtimeConfig
    default_sample_rate: int
    max_input_chars: int
    engine_rate: int
    overlap: int  # crossfade samples at a seam (the engine's crossfade)
    word_phonemes: Callable[[str], list[str]] | None = None  # None: timestamps are spread (approximate)

    @classmethod
    def of(
        cls,
        settings: Settings,
        speech: SpeechSource,
        principal: Principal,
        *,
        engine_rate: int,
        overlap: int,
        word_phonemes: Callable[[str], list[str]] | None = None,
    ) -> SessionContext:
        """A session's context: its limits from ``settings``, its engine's rate and seam from the caller."""
        return cls(
            speech=speech,
            principal=principal,
            config=settings.realtime,
            default_sample_rate=settings.server.output_sample_rate,
            max_input_chars=settings.server.max_input_chars,
            engine_rate=engine_rate,
            overlap=overlap,
            word_phonemes=word_phonemes,
        )


@dataclass
class _Opened:
    item: Item
    stream: SegmentStream | None = None
    error: ChorusError | None = None


@dataclass
class _Queues:
    items: deque[Item] = field(default_factory=deque)
    opened: deque[_Opened] = field(default_factory=deque)
    opening: Item | None = None

    def busy(self) -> bool:
        return bool(self.items or self.opened or self.opening is not None)


def new_segmenter(config: RealtimeConfig) -> TextSegmenter:
    """A segmenter with the server's ``realtime`` settings."""
    return TextSegmenter(SegmenterConfig(config.first_min_words, config.min_words, config.max_words, config.idle_s))


class AgentSession:
    def __init__(self, ctx: SessionContext, send: Callable[[Frame], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.session_id = f"sess_{uuid.uuid4().hex[:20]}"
        self.settings = SessionSettings(sample_rate=ctx.default_sample_rate)
        self.segmenter = new_segmenter(ctx.config)
        self._out = Outbox(send, ctx.engine_rate)
        self._q = _Queues()
        self._changed = asyncio.Event()  # an item was queued or opened, or text arrived (wakes the tasks)
        self._joiner = SeamJoiner(ctx.overlap)
        self._utterance: Utterance | None = None  # the one taking text now
        self._playing: Utterance | None = None  # the one whose audio goes out now
        self._playing_stream: SegmentStream | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.last_activity = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._out.start(f"{self.session_id}-send")
        self._start_workers()
        await self._out.emit({"type": "session.created", "session": self._describe()})

    def _start_workers(self) -> None:
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name=f"{self.session_id}-tick"),
            asyncio.create_task(self._open_loop(), name=f"{self.session_id}-open"),
            asyncio.create_task(self._play_loop(), name=f"{self.session_id}-play"),
        ]

    async def close(self) -> None:
        """Stop everything now (the client left, or the session ends): every engine slot is freed."""
        await self._stop_workers()
        await self._out.close()

    async def finish(self, timeout_s: float) -> None:
        """``session.close``: speak what is buffered, wait (bounded) until it has gone out."""
        self._end_utterance()
        deadline = time.monotonic() + timeout_s
        while (self._q.busy() or self._playing is not None) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._out.drain(deadline - time.monotonic())

    def idle_for(self) -> float:
        """Seconds since the client's last message."""
        return time.monotonic() - self.last_activity

    async def report(self, err: ChorusError) -> None:
        """An ``error`` event for something the route refused."""
        await self._error(err)

    @property
    def is_idle(self) -> bool:
        return not self._q.busy() and self._playing is None and not self.segmenter.buffered.strip()

    # -- client messages -----------------------------------------------------------------------------

    async def handle(self, raw: str) -> bool:
        """One client message; False when the client asked to close. Bad messages get an ``error`` event."""
        self.last_activity = time.monotonic()
        try:
            message, fields = parse_message(raw)
            kind = message.type
            if kind == "session.update":
                settings = apply_update(self.settings, fields)
                if "voice" in fields and settings.voice is not None:  # refused now, not when it is first spoken
                    tenant = self.ctx.principal.tenant_id
                    await asyncio.to_thread(self.ctx.speech.voices.resolve, tenant, settings.voice)
                self.settings = settings
                await self._out.emit({"type": "session.updated", "session": self._describe()})
            elif isinstance(message, TextAppend):
                self._append(message.text)
            elif kind == "input_text.flush":
                self._end_utterance()
            elif kind == "response.cancel":
                await self.cancel()
            elif kind == "session.close":
                return False
        except ChorusError as e:
            await self._error(e)
        return True

    def _append(self, text: str) -> None:
        queued = sum(len(i.text) for i in self._q.items if isinstance(i, Segment))
        if len(self.segmenter.buffered) + queued + len(text) > self.ctx.config.max_buffered_chars:
            raise QueueFullError(
                f"more than {self.ctx.config.max_buffered_chars} characters are waiting to be spoken",
                retry_after_s=1.0,
                code="text_buffer_full",
            )
        utterance = self._current_utterance()
        utterance.chars += len(text)
        self._queue_segments(utterance, self.segmenter.append(text, time.monotonic()))

    def _current_utterance(self) -> Utterance:
        if self._utterance is None:
            self._utterance = Utterance(f"resp_{uuid.uuid4().hex[:20]}", self.settings)
        return self._utterance

    def _end_utterance(self) -> None:
        utterance = self._utterance
        if utterance is None:
            return
        rest = self.segmenter.flush()
        self._queue_segments(utterance, [rest] if rest else [])
        self._q.items.append(End(utterance))
        self._utterance = None
        self.segmenter.start_utterance()
        self._changed.set()

    def _queue_segments(self, utterance: Utterance, texts: list[str]) -> None:
        for text in texts:
            self._q.items.append(Segment(utterance, text))
        self._changed.set()

    async def cancel(self) -> None:
        """Barge-in: no audio after this (but the frame being written), slots freed, ready for the next."""
        await self._stop_workers()
        cancelled: list[Utterance] = []
        for u in [self._playing, *(o.item.utterance for o in self._q.opened), self._utterance]:
            if u is not None and u not in cancelled:
                cancelled.append(u)
        for item in self._q.items:
            if item.utterance not in cancelled:
                cancelled.append(item.utterance)
        self._q = _Queues()
        self._playing = None
        self._utterance = None
        self.segmenter.clear()
        self.segmenter.start_utterance()
        self._joiner.drop()
        self._joiner.position -= self._out.drop_audio()  # the session's clock: the audio the client got
        for u in cancelled:
            if u.started:
                await self._out.done(u, "cancelled")
        # Always acknowledged, last: binary frames carry no response id, so a client discards audio from its
        # cancel up to this event (chorus.client does).
        ids = [u.response_id for u in cancelled if u.started]
        await self._out.emit({"type": "response.cancelled", "response_ids": ids})
        self._start_workers()

    async def _stop_workers(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for opened in self._q.opened:
            if opened.stream is not None:
                _abandon(opened.stream)
        if self._playing_stream is not None:
            _abandon(self._playing_stream)
            self._playing_stream = None

    # -- the tasks -----------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        """Releases segments that became ready by idleness."""
        while True:
            due_at = self.segmenter.next_due_at()
            timeout = None if due_at is None else max(0.0, due_at - time.monotonic())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            ready = self.segmenter.due(time.monotonic())
            if ready:
                self._queue_segments(self._current_utterance(), ready)

    async def _open_loop(self) -> None:
        """Queued segments → engine requests, in order, one ahead of the one playing."""
        q = self._q
        while True:
            while not q.items or len(q.opened) >= 1:
                await self._wait_change()
            item = q.items.popleft()
            if isinstance(item, Segment):
                item = self._merge(item)
            q.opening = item
            opened = _Opened(item)
            try:
                if isinstance(item, Segment):
                    await self._open(opened, item)
                q.opened.append(opened)
            except asyncio.CancelledError:
                if opened.stream is not None and opened not in q.opened:
                    _abandon(opened.stream)
                raise
            finally:
                q.opening = None
            self._changed.set()

    async def _open(self, opened: _Opened, segment: Segment) -> None:
        while True:
            try:
                opened.stream = await self.ctx.speech.open(self._order(segment))
                return
            except QueueFullError as e:
                # A key allowed one request at a time: the segment ahead holds it; open this one when it is done.
                if e.code != "key_concurrency_limit" or self._playing_stream is None:
                    opened.error = e
                    return
                await self._wait_change()
            except ChorusError as e:
                opened.error = e
                return

    def _merge(self, first: Segment) -> Segment:
        """Segments of one utterance already queued go as one request (fewer seams), within the text limit."""
        q, text = self._q, first.text
        while q.items and isinstance(nxt := q.items[0], Segment) and nxt.utterance is first.utterance:
            if len(text) + 1 + len(nxt.text) > self.ctx.max_input_chars:
                break
            text = f"{text} {nxt.text}"
            q.items.popleft()
        return Segment(first.utterance, text)

    def _order(self, segment: Segment) -> SpeechOrder:
        s, principal, now = segment.utterance.settings, self.ctx.principal, time.monotonic()
        return SpeechOrder(
            segment.text,
            s.voice,
            synthesis_params(s, speed=s.speed, instructions=None),
            priority=s.priority,
            tenant_id=principal.tenant_id,
            timeout_s=s.timeout,
            text_param="text",
            response_format=s.response_format,
            key_id=principal.key_id,
            max_concurrency=principal.max_concurrency,
            plays_at=self._out.playback_end if self._out.playback_end > now else None,
            sample_rate=s.sample_rate,
        )

    async def _play_loop(self) -> None:
        q = self._q
        last: Segment | None = None
        while True:
            if not q.opened:
                if last is not None and not q.busy():
                    await self._out.audio(last.utterance, self._joiner.flush())  # the text paused: no seam
                    last = None
                await self._wait_change()
                continue
            opened = q.opened.popleft()
            self._changed.set()  # the opener may go on
            item = opened.item
            if last is not None:
                if isinstance(item, Segment) and item.utterance is last.utterance and opened.stream is not None:
                    self._joiner.seam()
                else:
                    await self._out.audio(last.utterance, self._joiner.flush())
                last = None
            if isinstance(item, End):
                await self._end(item.utterance)
                continue
            utterance = item.utterance
            if not utterance.started:
                utterance.started = True
                await self._out.started(utterance, self._joiner.position)
            if opened.error is not None or opened.stream is None:
                utterance.failed += 1
                await self._error(opened.error or InvalidRequestError("nothing to speak"), utterance.response_id)
                continue
            self._playing = utterance
            await self._play(item, opened.stream)
            last = item

    async def _play(self, segment: Segment, stream: SegmentStream) -> None:
        utterance = segment.utterance
        self._playing_stream = stream
        wanted, phonemes = utterance.settings.timestamps, self.ctx.word_phonemes
        timer = WordTimer(segment.text, phonemes) if wanted and phonemes is not None else None
        start: int | None = None
        outcome = "aborted"
        try:
            async for out in stream:
                audio, at = self._joiner.push(out.audio)
                if start is None and out.audio.size:
                    start = at
                await self._out.audio(utterance, audio, stream.receipt)
                if timer is not None and start is not None:
                    timer.feed(out.alignments)
                    # Words go out with the chunk their audio starts in.
                    await self._out.timestamps(utterance, timer.ready(self._joiner.position - start), start)
            outcome = "ok"
            utterance.segments += 1
            if wanted and start is not None:
                # Without phoneme alignments (Qwen3), words are spread over the segment's audio by length.
                words = (
                    timer.finish() if timer is not None else spread_words(segment.text, self._joiner.position - start)
                )
                await self._out.timestamps(utterance, words, start)
        except ChorusError as e:
            outcome = e.code or e.error_type
            utterance.failed += 1
            await self._error(e, utterance.response_id)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._playing_stream = None
            self._changed.set()
            stream.receipt.audio_seconds = stream.audio_seconds
            stream.receipt.seal(outcome)
            stream.abort()

    async def _end(self, utterance: Utterance) -> None:
        if utterance.started:
            await self._out.audio(utterance, np.zeros(0, dtype=np.float32), last=True)
            status = "failed" if utterance.failed and not utterance.samples else "completed"
            await self._out.done(utterance, status)
        if self._playing is utterance:
            self._playing = None

    # -- output --------------------------------------------------------------------------------------

    def _describe(self) -> dict[str, object]:
        return {"id": self.session_id, **self.settings.model_dump(exclude_none=True)}

    async def _error(self, err: ChorusError, response_id: str | None = None) -> None:
        await self._out.error(err, response_id)

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()


def _abandon(stream: SegmentStream) -> None:
    stream.abort()
    stream.receipt.audio_seconds = stream.audio_seconds
    stream.receipt.seal("cancelled")
