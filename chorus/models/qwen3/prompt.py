"""Request prompts built by qwen-tts's own code, captured instead of re-implemented.

``Qwen3TTSForConditionalGeneration.generate`` assembles each request's talker prompt (role tokens, codec
think/language/speaker rows, text rows, ICL reference codes) and then calls ``talker.generate``. We run the
library's public wrappers for ONE request with ``talker.generate`` swapped for a function that records its
inputs and stops: the prompt is exactly the library's, for every mode it supports, and chorus owns only
the step loop. With batch size one there is no padding to undo.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TalkerPrompt:
    """One request's conditioning: prompt rows, text rows fed one per step, and the pad row after them."""

    embeds: torch.Tensor  # [P, H]
    trailing: torch.Tensor  # [T, H]
    pad: torch.Tensor  # [H]


class _Captured(Exception):
    pass


class PromptCapture:
    def __init__(self, talker: Any) -> None:
        self._talker = talker
        self._lock = threading.Lock()  # the swap is on a shared module: one capture at a time

    def capture(self, call: Callable[[], object]) -> TalkerPrompt:
        seen: dict[str, Any] = {}

        def record(**kwargs: Any) -> None:
            seen.update(kwargs)
            raise _Captured

        with self._lock:
            self._talker.generate = record
            try:
                call()
            except _Captured:
                pass
            finally:
                del self._talker.generate
        if "inputs_embeds" not in seen:
            raise RuntimeError("qwen-tts did not reach talker.generate; cannot build the prompt")
        return TalkerPrompt(
            embeds=seen["inputs_embeds"][0].detach(),
            trailing=seen["trailing_text_hidden"][0].detach(),
            pad=seen["tts_pad_embed"].reshape(-1).detach(),
        )
