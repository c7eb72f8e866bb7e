"""The vTTS baseline of ``chorus bench-qwen3``: ``vtts_driver.py`` in vTTS's own python, as a child process.

vTTS (caimari/vtts) needs a fork of qwen-tts that cannot live in chorus's environment, so the bench starts
the driver once under ``--vtts-python`` and sends it one JSON line per run; the model stays loaded between
runs, like chorus's, so that repeats interleave warm (chorus, vTTS, chorus, vTTS, ...).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).with_name("vtts_driver.py")


class VttsError(RuntimeError):
    pass


class VttsBaseline:
    def __init__(
        self, python: str, model: Path, *, threads: int, max_slots: int, emit_every_frames: int, device: str
    ) -> None:
        command = [
            python,
            str(DRIVER),
            "--model",
            str(model),
            "--threads",
            str(threads),
            "--max-slots",
            str(max_slots),
            "--emit-every-frames",
            str(emit_every_frames),
            "--device",
            device,
        ]
        # Its logs (and qwen-tts's banners) go to a file, shown when something fails.
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the driver; closed in close())
        try:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
            )
        except OSError as e:
            raise VttsError(f"cannot start the vTTS driver with {python!r}: {e}") from e
        self.info = self._read()
        if not self.info.get("ready"):
            self.close()
            raise VttsError(f"the vTTS driver did not start: {self.info.get('error', self.info)}")

    def run(self, texts: list[str], speakers: list[str], *, frames: int, language: str, seed: int) -> dict[str, Any]:
        job = {"texts": texts, "speakers": speakers, "frames": frames, "language": language, "seed": seed}
        if self._proc.stdin is None:
            raise VttsError("the vTTS driver has no stdin")
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()

    def _read(self) -> dict[str, Any]:
        line = self._proc.stdout.readline() if self._proc.stdout is not None else ""
        if not line:
            code = self._proc.wait()
            self._log.seek(0)
            tail = self._log.read()[-2000:]
            raise VttsError(f"the vTTS driver exited (code {code}); its last output:\n{tail}")
        result: dict[str, Any] = json.loads(line)
        return result
