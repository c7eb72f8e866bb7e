"""``python -m chorus.finetune.qwen3_train`` (its real ``main``: argument parsing, SIGTERM handler, exit code) with
one test hook, so that a test can signal it at a known step without racing it: after reporting step
``CHORUS_TEST_PAUSE_AT`` it prints ``paused`` and waits until SIGTERM sets the stop flag (at most 120 s, long
enough to be SIGKILLed)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from chorus.finetune import qwen3_train

PAUSE_AT = int(os.environ["CHORUS_TEST_PAUSE_AT"])
_run = qwen3_train.LoraTrainer.run


def run(
    self: qwen3_train.LoraTrainer,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[qwen3_train.StepEvent], None] | None = None,
) -> Any:
    def hook(event: qwen3_train.StepEvent) -> None:
        if on_step is not None:
            on_step(event)
        if event.step == PAUSE_AT:
            print("paused", flush=True)
            deadline = time.monotonic() + 120
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(0.01)

    return _run(self, should_stop, hook)


if __name__ == "__main__":
    qwen3_train.LoraTrainer.run = run  # type: ignore[method-assign]
    sys.exit(qwen3_train.main(sys.argv[1:]))
