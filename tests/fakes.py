"""A small deterministic backend for engine and scheduler tests (no model).

Each request produces one frame per word of its text; frame k of a request is a fixed function of the
request's text and k, so the expected audio is known without any batching.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from chorus.models.base import SlotState, SpeechInput, StepOutput, VoiceInfo, Window

FRAME_SAMPLES = 100


def expected_frame(text: str, k: int) -> np.ndarray:
    seed = zlib.crc32(f"{text}|{k}".encode())
    return np.random.default_rng(seed).uniform(-0.5, 0.5, FRAME_SAMPLES).astype(np.float32)


def expected_audio(text: str) -> np.ndarray:
    return np.concatenate([expected_frame(text, k) for k in range(len(text.split()))])


@dataclass(eq=False, slots=True)
class FakeSlot(SlotState):
    text: str = ""
    total: int = 0
    cursor: int = 0


@dataclass
class FakeBackend:
    name: str = "fake"
    sample_rate: int = 1000
    frame_seconds: float = FRAME_SAMPLES / 1000
    default_max_slots: int = 4
    is_compute_bound: bool = False
    num_workers: int = 1
    is_autoregressive: bool = False
    cost_per_step: float = 0.01
    fail_on_step: int | None = None  # raise from step() on this step number (engine failure)
    fail_text: str | None = None  # a slot whose text contains this fails alone
    step_delay_s: float = 0.0
    prefill_errors: dict[str, Exception] = field(default_factory=dict)  # prefill raises it for a text holding the key
    steps: list[list[str]] = field(default_factory=list)  # request ids advanced by each step
    released: list[str] = field(default_factory=list)
    gate: threading.Event | None = None  # when set, step() waits for it (tests hold the engine still)

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("fake", "fake", "en")]

    def preprocess(self, inp: SpeechInput) -> Any:
        if not inp.text.split():
            raise ValueError("nothing to speak")
        return len(inp.text.split())

    def prefill(self, inputs: Sequence[tuple[SpeechInput, Any]]) -> list[SlotState]:
        for inp, _ in inputs:
            for key, error in self.prefill_errors.items():
                if key in inp.text:
                    raise error
        return [FakeSlot(inp.request_id, text=inp.text, total=len(inp.text.split())) for inp, _ in inputs]

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_on_step is not None and len(self.steps) >= self.fail_on_step:
            raise RuntimeError("injected engine failure")
        if self.step_delay_s:
            threading.Event().wait(self.step_delay_s)
        self.steps.append([s.request_id for s in slots])
        outputs = []
        for slot in slots:
            assert isinstance(slot, FakeSlot)
            if self.fail_text and self.fail_text in slot.text:
                slot.is_finished = True
                outputs.append(StepOutput(np.zeros(0, np.float32), is_finished=True, error=ValueError("bad slot")))
                continue
            audio = expected_frame(slot.text, slot.cursor)
            slot.cursor += 1
            slot.num_frames += 1
            slot.is_finished = slot.cursor >= slot.total
            outputs.append(StepOutput(audio, 1, slot.is_finished))
        return outputs

    def estimate_cost(self, slot: SlotState) -> float:
        return self.cost_per_step

    def flush(self, slot: SlotState) -> np.ndarray:
        return np.zeros(0, np.float32)

    def release(self, slot: SlotState) -> None:
        self.released.append(slot.request_id)

    def close(self) -> None:
        pass


@dataclass
class FakePlannerBackend(FakeBackend):
    """A compute-bound fake that plans (chorus.models.base.WorkPlanner): every frame is one step of
    ``cost_per_step`` CPU seconds (reported as such) that takes ``step_delay_s`` of wall time."""

    is_compute_bound: bool = True

    def plan(self, slot: SlotState) -> tuple[Window, ...]:
        assert isinstance(slot, FakeSlot)
        return self._windows(slot.total - slot.cursor)

    def plan_input(self, inp: SpeechInput, prepared: Any) -> tuple[Window, ...]:
        return self._windows(len(inp.text.split()))

    def _windows(self, frames: int) -> tuple[Window, ...]:
        return tuple(Window(self.frame_seconds, self.cost_per_step) for _ in range(frames))

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        return [replace(out, cpu_s=self.cost_per_step) for out in super().step(slots)]


@dataclass
class SlowTextBackend(FakeBackend):
    """Steps of a slot whose text has ``slow`` take ``slow_s`` (a long window holding a worker)."""

    slow_s: float = 1.2

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        if any(isinstance(s, FakeSlot) and "slow" in s.text for s in slots):
            threading.Event().wait(self.slow_s)
        return super().step(slots)
