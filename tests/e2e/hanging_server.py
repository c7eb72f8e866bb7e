"""`chorus serve` whose backend hangs for ever inside a step for requests named ``hang-*`` (X-Request-Id), for
the watchdog's test. Everything else is the real server.

python -m tests.e2e.hanging_server serve --config FILE
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

from chorus import cli
from chorus.models import piper
from chorus.models.base import SlotState, StepOutput


def main() -> int:
    original_step = piper.PiperBackend.step

    def step(self: piper.PiperBackend, slots: Sequence[SlotState]) -> list[StepOutput]:
        if any(slot.request_id.startswith("hang-") for slot in slots):
            threading.Event().wait()  # a kernel that never returns
        return original_step(self, slots)

    piper.PiperBackend.step = step  # type: ignore[method-assign]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
