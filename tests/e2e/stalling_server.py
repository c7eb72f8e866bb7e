"""`chorus serve` that stops forever inside a voice registration, for the test that kills a server there.

python -m tests.e2e.stalling_server STAGE MARKER serve --config FILE

At VoiceStore stage STAGE ("row_inserted", "blob_written:processed", ...) of the first registration, the
voice id is written to MARKER and the registration waits to be killed. Everything else is the real server.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from chorus import cli
from chorus.store import voices


def main() -> int:
    stage, marker = sys.argv[1], Path(sys.argv[2])
    original_init = voices.VoiceStore.__init__

    def stall(reached: str, voice_id: str) -> None:
        if reached == stage:
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(voice_id)
            os.replace(tmp, marker)
            time.sleep(600)  # the test kills the server here

    def init(self: voices.VoiceStore, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]
        self._on_stage = stall

    voices.VoiceStore.__init__ = init  # type: ignore[method-assign]
    return cli.main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
