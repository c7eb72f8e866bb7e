"""The library API: an engine in your own process, no server.

    from chorus import TTS

    with TTS() as tts:                       # the bundled CPU voice; TTS.from_config("chorus.yaml") for yours
        for chunk in tts.stream("Hello there. How are you?"):
            play(chunk.audio, chunk.sample_rate)  # float32 mono, as soon as each chunk is ready
        audio = tts.synthesize("Or all at once.")

Many threads may call ``stream``/``synthesize`` at once: their requests share the engine's batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from chorus.config import Settings, load_settings
from chorus.engine.builder import build_engine
from chorus.engine.client import AsyncEngine
from chorus.engine.request import RequestOutput
from chorus.errors import InvalidRequestError
from chorus.models.base import SynthesisParams, VoiceInfo
from chorus.speech import BuiltinVoices, SpeechOrder, SpeechService, speech_limits
from chorus.voices.catalog import VoiceCatalog
from chorus.watermark.marking import HOLD_BACK_S, Marking, configured_key, key_from_file


class TTS:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.engine = AsyncEngine(build_engine(self.settings, output_hold_s=HOLD_BACK_S))
        self.voices = VoiceCatalog(self.engine.backend.voices())
        marking = Marking(configured_key(self.settings.safety.watermark_key) or key_from_file(self.settings.data_dir))
        self.speech = SpeechService(
            self.engine, BuiltinVoices(self.voices), speech_limits(self.settings), marking=marking
        )
        self.engine.start()

    @classmethod
    def from_config(cls, path: str | Path) -> TTS:
        return cls(load_settings(path))

    @property
    def sample_rate(self) -> int:
        return self.engine.backend.sample_rate

    def list_voices(self) -> list[VoiceInfo]:
        return self.voices.list()

    def stream(
        self, text: str, voice: str | None = None, *, priority: int = 0, **params: Any
    ) -> Iterator[RequestOutput]:
        """Yield audio chunks as the engine produces them; raises the request's typed error on failure.

        ``params`` are :class:`SynthesisParams` fields (speed, noise_scale, seed, ...).
        """
        try:
            synthesis = SynthesisParams(**params)
        except TypeError as e:
            raise InvalidRequestError(str(e)) from e
        return self.speech.stream(SpeechOrder(text, voice, synthesis, priority=priority, text_param="text"))

    def synthesize(self, text: str, voice: str | None = None, **params: Any) -> np.ndarray:
        """The whole audio of ``text`` as float32 mono at ``sample_rate``."""
        chunks = [out.audio for out in self.stream(text, voice, priority=0, **params)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> TTS:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
