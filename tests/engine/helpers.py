from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from chorus.engine.client import AsyncEngine
from chorus.engine.config import EngineConfig
from chorus.engine.engine import Engine
from chorus.engine.request import Request, RequestOutput, RequestStatus
from chorus.models.base import Backend, SpeechInput, SynthesisParams
from chorus.speech import BuiltinVoices, SpeechLimits, SpeechService
from chorus.voices.catalog import VoiceCatalog
from chorus.watermark.marking import Marking


@dataclass
class Collector:
    """A request's sink: keeps every output."""

    outputs: list[RequestOutput] = field(default_factory=list)

    def __call__(self, out: RequestOutput) -> None:
        self.outputs.append(out)

    @property
    def final(self) -> RequestOutput | None:
        return self.outputs[-1] if self.outputs and self.outputs[-1].is_finished else None

    @property
    def status(self) -> RequestStatus | None:
        return self.final.status if self.final else None

    def audio(self) -> np.ndarray:
        chunks = [o.audio for o in self.outputs]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def make_engine(backend: Backend, **config: object) -> Engine:
    defaults: dict[str, object] = {"max_slots": 4, "queue_limit": 16}
    defaults.update(config)
    return Engine(backend, EngineConfig(**defaults))  # type: ignore[arg-type]


def speech_service(
    engine: Engine, max_input_chars: int = 100_000, marking: Marking | None = None
) -> tuple[AsyncEngine, SpeechService]:
    """The engine behind the one request intake, resolving the backend's own voices (as the library does);
    unmarked unless ``marking`` is given, so that tests of the engine see the backend's own samples."""
    client = AsyncEngine(engine)
    voices = BuiltinVoices(VoiceCatalog(engine.backend.voices()))
    limits = SpeechLimits(max_input_chars=max_input_chars)
    return client, SpeechService(client, voices, limits, marking=marking)


def submit(
    engine: Engine,
    text: str,
    request_id: str,
    *,
    priority: int = 0,
    timeout_s: float | None = None,
    params: SynthesisParams | None = None,
    voice: str | None = None,
    background: bool = False,
) -> tuple[Request, Collector]:
    sink = Collector()
    voice = voice or engine.backend.voices()[0].voice_id
    inp = SpeechInput(request_id, text, voice, params or SynthesisParams())
    prepared = engine.backend.preprocess(inp)
    req = Request(inp, sink, prepared=prepared, priority=priority, timeout_s=timeout_s, background=background)
    engine.add_request(req)
    return req, sink


def run_until_idle(engine: Engine, max_steps: int = 10_000) -> int:
    steps = 0
    while engine.has_work():
        engine.step()
        steps += 1
        if steps > max_steps:
            raise RuntimeError("engine did not go idle")
    return steps


def wait_final(sinks: list[Collector], timeout_s: float = 10) -> None:
    """Wait (bounded) until every sink has its final output (the engine runs in its own thread)."""
    deadline = time.monotonic() + timeout_s
    while any(s.final is None for s in sinks) and time.monotonic() < deadline:
        time.sleep(0.005)
