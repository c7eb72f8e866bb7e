"""What a voice-agent session sends: events and audio, in order, through one task that alone writes to the socket.

Audio is resampled and encoded per utterance (``pcm`` frames concatenate into one stream for the whole session;
``mp3``/``opus`` make one file per utterance). A barge-in drops every audio and timestamp frame still queued, so
at most the frame being written reaches the client after ``response.cancel``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from chorus.agent.protocol import SessionSettings
from chorus.audio.encode import StreamEncoder, make_encoder
from chorus.audio.resample import StreamResampler
from chorus.audit import SynthesisReceipt
from chorus.errors import ChorusError, QueueFullError
from chorus.server.errors import error_body
from chorus.timestamps import WordTime

OUTBOX_FRAMES = 64  # frames queued for the socket before the player waits (a slow client slows its own session)
Frame = bytes | dict[str, object]
DROPPED_ON_CANCEL = frozenset({"response.audio.delta", "response.timestamps"})


@dataclass(eq=False)
class Utterance:
    """Text from the first append after the previous utterance ended, up to its flush (or cancel)."""

    response_id: str
    settings: SessionSettings
    chars: int = 0
    samples: int = 0  # engine-rate samples sent
    segments: int = 0
    failed: int = 0  # segments refused or failed
    started: bool = False
    resampler: StreamResampler | None = None
    encoder: StreamEncoder | None = None


class Outbox:
    def __init__(self, send: Callable[[Frame], Awaitable[None]], engine_rate: int) -> None:
        self._send = send
        self.engine_rate = engine_rate
        # (frame, the engine-rate samples it carries, their utterance): a dropped frame is taken off the counts.
        self._queue: asyncio.Queue[tuple[Frame, int, Utterance | None] | None] = asyncio.Queue(OUTBOX_FRAMES)
        self._task: asyncio.Task[None] | None = None
        self.playback_end = 0.0  # monotonic time the client's audio runs out (it plays as it receives)

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._loop(), name=name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await self._task

    async def drain(self, timeout_s: float) -> None:
        """Send what is queued (bounded), then stop."""
        await self._queue.put(None)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), max(0.1, timeout_s))

    async def emit(self, frame: Frame, samples: int = 0, utterance: Utterance | None = None) -> None:
        await self._queue.put((frame, samples, utterance))

    async def audio(
        self, utterance: Utterance, audio: np.ndarray, receipt: SynthesisReceipt | None = None, *, last: bool = False
    ) -> None:
        """Engine-rate float audio of ``utterance`` (``last``: its end: the encoder's tail goes too)."""
        if utterance.resampler is None or utterance.encoder is None:
            s = utterance.settings
            utterance.resampler = StreamResampler(self.engine_rate, s.sample_rate)
            utterance.encoder = make_encoder(s.response_format, s.sample_rate)
        if audio.size:
            utterance.samples += audio.size
            self.playback_end = max(self.playback_end, time.monotonic()) + audio.size / self.engine_rate
        data = utterance.encoder.encode(utterance.resampler.process(audio, last=last))
        if last:
            data += utterance.encoder.finish()
            utterance.resampler = utterance.encoder = None
        if not data:
            return
        if receipt is not None:
            receipt.delivered(data)
        frame: Frame = data
        if utterance.settings.audio_encoding == "base64":
            delta = {"type": "response.audio.delta", "response_id": utterance.response_id}
            frame = {**delta, "audio": base64.b64encode(data).decode()}
        await self.emit(frame, int(audio.size), utterance)

    async def timestamps(self, utterance: Utterance, words: list[WordTime], start: int) -> None:
        """Words of a segment whose first sample is at ``start`` on the session's audio clock."""
        if words:
            rate = self.engine_rate
            shifted = [w.as_json(rate, offset_s=start / rate) for w in words]
            await self.emit({"type": "response.timestamps", "response_id": utterance.response_id, "words": shifted})

    async def started(self, utterance: Utterance, position: int) -> None:
        s = utterance.settings
        await self.emit(
            {
                "type": "response.audio.start",
                "response_id": utterance.response_id,
                "response_format": s.response_format,
                "sample_rate": s.sample_rate,
                "audio_encoding": s.audio_encoding,
                "start_s": round(position / self.engine_rate, 3),
            }
        )

    async def done(self, utterance: Utterance, status: str) -> None:
        seconds = utterance.samples / self.engine_rate
        await self.emit(
            {
                "type": "response.audio.done",
                "response_id": utterance.response_id,
                "status": status,
                "usage": {"input_characters": utterance.chars, "audio_seconds": round(seconds, 3)},
            }
        )

    async def error(self, err: ChorusError, response_id: str | None = None) -> None:
        event: dict[str, object] = {"type": "error", **error_body(err.error_type, err.message, err.param, err.code)}
        if response_id is not None:
            event["response_id"] = response_id
        if isinstance(err, QueueFullError):
            event["retry_after_s"] = round(err.retry_after_s, 1)
        await self.emit(event)

    def drop_audio(self) -> int:
        """Barge-in: every queued audio and timestamp frame goes (their samples are taken off their utterance's
        count); other events stay, in order. The client stops playing now. Returns the samples dropped."""
        kept: list[tuple[Frame, int, Utterance | None] | None] = []
        dropped = 0
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry is None:
                kept.append(entry)
                continue
            frame, samples, utterance = entry
            if isinstance(frame, dict) and frame.get("type") not in DROPPED_ON_CANCEL:
                kept.append(entry)
            elif samples and utterance is not None:
                utterance.samples -= samples
                dropped += samples
        for entry in kept:
            self._queue.put_nowait(entry)
        self.playback_end = 0.0
        return dropped

    async def _loop(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            await self._send(entry[0])
