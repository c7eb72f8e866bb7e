"""A request and everything the engine knows about it while it lives."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chorus.audio.crossfade import Crossfader
from chorus.errors import ChorusError
from chorus.models.base import PhonemeAlignment, SlotState, SpeechInput


class RequestStatus(enum.IntEnum):
    """Ordered: every finished state compares greater than RUNNING."""

    WAITING = 0
    RUNNING = 1
    FINISHED_STOPPED = 2
    FINISHED_ABORTED = 3
    FINISHED_TIMEOUT = 4
    FINISHED_ERROR = 5

    @property
    def is_finished(self) -> bool:
        return self > RequestStatus.RUNNING


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """One message from the engine to a request's consumer: audio, then exactly one final message."""

    request_id: str
    audio: np.ndarray  # float32 PCM at sample_rate; empty on a final message without audio
    sample_rate: int
    alignments: tuple[PhonemeAlignment, ...] = ()
    is_finished: bool = False
    status: RequestStatus = RequestStatus.RUNNING
    error: ChorusError | None = None
    # Seconds of audio sent for this request so far, this output included.
    audio_seconds: float = 0.0
    # Set when the request had to wait for a slot: its first-audio time as first predicted, in seconds after it
    # arrived (the bench compares it with what happened).
    predicted_first_audio_s: float | None = None


Sink = Callable[[RequestOutput], None]


@dataclass(frozen=True, slots=True)
class Lead:
    """How far ahead of its client a playing stream is kept beyond the delivery margin: ``rate`` of the audio sent
    so far, up to ``max_s``. A cushion for what no estimate sees coming: a machine that slows for a few seconds
    (a noisy neighbour on a VM) eats into every stream's lead instead of making it run dry. It is built while the
    stream starts (its first windows are due up to ``1 / (1 - rate)`` times faster than real time) and then costs
    nothing: a stream kept a constant time ahead needs the same CPU per second as one kept just in time. Admission
    plans it, so load cannot spend it on newcomers."""

    max_s: float = 0.0
    rate: float = 0.25

    def __call__(self, sent_s: float) -> float:
        return min(self.max_s, self.rate * max(0.0, sent_s))


NO_LEAD = Lead()


@dataclass(eq=False)
class Request:
    """A request's state inside the engine: written by the scheduler and the engine, read by no one else."""

    input: SpeechInput
    sink: Sink
    prepared: Any = None  # backend.preprocess output
    priority: int = 0  # higher runs first
    timeout_s: float | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    # When its client starts playing its audio (a voice-agent session's next segment plays when the previous one
    # runs out); None: as soon as it is made.
    plays_at: float | None = None
    # Audio the layers above the engine keep back from this request's client beyond what every stream's delivery
    # margin covers (its resampler's filter delay): its deadlines come that much earlier.
    hold_back_s: float = 0.0
    # Nobody listens while it is made (a batch job's item): the pipelined engine runs it only on CPU that live
    # requests leave idle (its background lanes), and admission control plans live streams without it.
    background: bool = False
    status: RequestStatus = RequestStatus.WAITING
    slot: SlotState | None = None
    crossfader: Crossfader | None = None
    admitted_time: float | None = None  # when it got a slot
    first_audio_time: float | None = None
    last_audio_time: float | None = None  # when its latest audio left the engine
    # Admission control's prediction, when it had to wait: when its first audio should come (monotonic seconds).
    predicted_first_audio: float | None = None
    first_prediction_s: float | None = None  # the first such prediction, in seconds after arrival
    num_samples_sent: int = 0
    num_frames: int = 0
    max_frames: int | None = None
    sequence: int = 0  # arrival order, ties broken by it
    in_flight: bool = False  # a worker is stepping its slot right now
    planned_cost_s: float = 0.0  # the backend's estimate of the step in flight (admission learns its margin)
    # A finish that arrived while in flight (abort, timeout): applied when the worker hands the slot back.
    pending_finish: tuple[RequestStatus, ChorusError | None] | None = None

    @property
    def request_id(self) -> str:
        return self.input.request_id

    def deadline(
        self, sample_rate: int, first_audio_target_s: float = 0.0, margin_s: float = 0.0, lead: Lead = NO_LEAD
    ) -> float:
        """When this stream needs its next audio.

        Running: when its client runs out of audio, playing from its first byte (or from ``plays_at``, if later)
        in real time, less ``margin_s`` for the trip from the engine to the client (encoding, the event loop,
        the network), less the request's own ``hold_back_s`` and less the ``lead`` it is kept ahead by now.
        Waiting for its first audio: ``first_audio_target_s`` after it got its slot (after arrival while it has
        none), or when its client starts playing it (``plays_at``), if later. A request that waited in the queue
        is not more urgent than the streams already playing: its wait is over, and admission planned its first
        window from its admission on.
        """
        if self.first_audio_time is None:
            start = self.admitted_time if self.admitted_time is not None else self.arrival_time
            due = start + first_audio_target_s
            plays_due = self.plays_due(margin_s)
            return due if plays_due is None else max(due, plays_due)
        playing = self.first_audio_time if self.plays_at is None else max(self.first_audio_time, self.plays_at)
        sent = self.num_samples_sent / sample_rate
        return playing + sent - margin_s - self.hold_back_s - lead(sent)

    def plays_due(self, margin_s: float) -> float | None:
        """When a segment that plays later (``plays_at``) needs its first audio: ``margin_s`` and its own
        ``hold_back_s`` before its client starts playing it (None: it plays as soon as it is made)."""
        return None if self.plays_at is None else self.plays_at - margin_s - self.hold_back_s

    def is_starting(self, due_by: float) -> bool:
        """A newcomer: no audio yet, wanted at once (a segment that plays after ``due_by`` is not one: it waits
        its turn as a regular stream, off the newcomers' lane)."""
        return self.first_audio_time is None and (self.plays_at is None or self.plays_at <= due_by)

    def is_expired(self, now: float) -> bool:
        return self.timeout_s is not None and now - self.arrival_time > self.timeout_s
