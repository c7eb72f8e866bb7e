"""The backend contract: every model chorus serves implements :class:`Backend`.

The engine owns scheduling; a backend owns the maths. A request's data crosses once
(``preprocess`` then ``prefill``); after that the engine hands the backend only slot states.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice a backend can speak with."""

    voice_id: str
    name: str
    language: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class SynthesisParams:
    """Per-request knobs. Backends ignore what they do not support."""

    speed: float = 1.0
    language: str | None = None
    instructions: str | None = None
    # Piper: generator noise and phoneme-width noise (None = the voice's defaults; 0 = deterministic).
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    # Autoregressive backends: per-request sampling with its own RNG.
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class SpeechInput:
    """What to say, with which voice: the request data a backend sees."""

    request_id: str
    text: str
    voice_id: str
    params: SynthesisParams = field(default_factory=SynthesisParams)


@dataclass(frozen=True, slots=True)
class PhonemeAlignment:
    """One phoneme's place in the audio, in samples from the start of the request's audio."""

    phoneme: str
    start_sample: int
    num_samples: int


@dataclass(eq=False, slots=True)
class SlotState:
    """Mutable per-request state a backend keeps while a request holds a slot."""

    request_id: str
    # Frames produced so far (the backend's unit: a latent frame for Piper, a codec frame for AR models).
    num_frames: int = 0
    is_finished: bool = False


@dataclass(slots=True)
class StepOutput:
    """What one step produced for one slot."""

    # [num_samples] float32 PCM at the backend's sample_rate; may be empty.
    audio: np.ndarray
    num_frames: int = 0
    is_finished: bool = False
    # The audio ends a segment decoded on its own: the engine crossfades it into the next chunk.
    is_segment_end: bool = False
    # Alignments whose start_sample is relative to the start of this output's audio.
    alignments: tuple[PhonemeAlignment, ...] = ()
    # Set when this slot failed; the other slots of the step are unaffected.
    error: Exception | None = None
    # CPU seconds this slot's step used (compute-bound backends; 0 = not measured): admission control compares
    # them with the estimate it planned on, and with the wall time, to learn its margin and the machine's speed.
    cpu_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Window:
    """One future step of a request, as planned: the audio it yields and its estimated compute (worker-seconds)."""

    audio_s: float
    cost_s: float


@runtime_checkable
class Backend(Protocol):
    """A model behind the engine.

    ``step`` advances every slot it is given by one unit (a decoder window for Piper, an AR frame for
    Qwen3) in ONE batched call, and must give each slot the same audio whatever else is in the batch.
    """

    name: str
    sample_rate: int
    # Seconds of audio per frame (for max_frames and ETA maths).
    frame_seconds: float
    default_max_slots: int
    # True when the cost of a step grows with the number of slots (CPU): the engine then picks slots
    # within a compute budget, earliest playback deadline first. False (GPU): every slot steps.
    is_compute_bound: bool
    # Parallel workers inside one step (the budget is per worker).
    num_workers: int
    is_autoregressive: bool

    def voices(self) -> list[VoiceInfo]: ...

    def preprocess(self, inp: SpeechInput) -> Any:
        """Text → model inputs (phonemes, tokens). Runs outside the engine loop; raises ValueError."""
        ...

    def prefill(self, inputs: Sequence[tuple[SpeechInput, Any]]) -> list[SlotState]:
        """Create the slot state of each joining request (conditioning, caches). ValueError means an input this
        backend cannot speak (the client's fault, 400); any other exception is a fault of the backend (500)."""
        ...

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        """Advance each slot by one unit in one batched call; one output per slot, in order."""
        ...

    def estimate_cost(self, slot: SlotState) -> float:
        """Estimated compute seconds of this slot's next step (for the scheduler's budget; CPU seconds on a
        compute-bound backend)."""
        ...

    def flush(self, slot: SlotState) -> np.ndarray:
        """Stop the slot early (the engine's max_frames cap) and return the audio it still holds back."""
        ...

    def release(self, slot: SlotState) -> None:
        """Free what the slot holds (called once, when its request leaves)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class WorkPlanner(Protocol):
    """A compute-bound backend that can tell what a request still costs, step by step (admission control and
    queue ETAs on CPU: chorus.engine.admission)."""

    def plan(self, slot: SlotState) -> tuple[Window, ...]:
        """The slot's remaining steps, in order (the first is the one ``estimate_cost`` prices)."""
        ...

    def plan_input(self, inp: SpeechInput, prepared: Any) -> tuple[Window, ...]:
        """Every step of a request not admitted yet (``prepared`` = its ``preprocess`` output)."""
        ...


@dataclass(frozen=True, slots=True)
class ReferenceVoice:
    """A registered voice as a backend sees it: the processed reference clip and what was said in it."""

    voice_id: str
    audio: np.ndarray  # mono float32, trimmed and loudness-normalised
    sample_rate: int
    ref_text: str | None = None
    language: str = "auto"


@runtime_checkable
class VoiceCloner(Protocol):
    """A backend that speaks in registered voices (optional: a backend without it offers built-in voices only).

    ``build_voice`` does the expensive work once per voice, at registration (a conversion model for Piper,
    prompt features for Qwen3-TTS Base), and returns it as bytes that the server persists with the voice.
    ``load_voice`` installs such bytes in memory: cheap, done once per process when the voice is first used.
    """

    # Names what build_voice makes (method, version, base model). Stored bytes of another format are rebuilt
    # from the voice's reference audio rather than loaded into a model they were not made for.
    voice_model_format: str
    # False when this model cannot take new voices (e.g. a Qwen3-TTS CustomVoice checkpoint): refused up front.
    can_clone: bool

    def build_voice(self, voice: ReferenceVoice) -> bytes:
        """Compute the voice's model; ValueError if this backend cannot use the clip (e.g. no cloning here)."""
        ...

    def load_voice(self, voice_id: str, data: bytes, language: str = "auto") -> None:
        """Install a built voice under ``voice_id``; ValueError if ``data`` is not of this backend's format."""
        ...

    def has_voice(self, voice_id: str) -> bool: ...

    def unload_voice(self, voice_id: str) -> None: ...
