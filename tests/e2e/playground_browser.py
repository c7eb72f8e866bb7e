"""A real headless Chromium (Debian's, driven by Playwright) for the playground's tests: launch flags for this
offline machine, a fake microphone that plays a WAV file, a watch on the page's console and network, and
screenshots kept as test artifacts.

The fake microphone: ``--use-file-for-fake-audio-capture=FILE%noloop``. Chromium opens FILE each time a
capture stream starts (each ``getUserMedia``), not at launch, so a test writes the speech it wants "spoken"
into FILE just before the page starts recording (``scripts/install_browser.sh`` installs the browser).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.voices.speech import flite_speak, silence, wav_bytes

if TYPE_CHECKING:  # playwright may be missing: the tests then skip (or fail under CI), not error at import
    from playwright.sync_api import ConsoleMessage, Page, Request, Response

CHROMIUM = "/usr/bin/chromium"
# What works on this offline machine: no sandbox (root), no GPU, and none of Chromium's own network traffic.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The microphone: granted without a prompt, a fake device, its sound from a file.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "playground"


def require_browser() -> None:
    """Skip (on a developer's machine) or fail (under CI) when Chromium or Playwright is missing."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        why = f"{' and '.join(missing)} missing: run scripts/install_browser.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def launch_args(mic: Path) -> list[str]:
    return [*FLAGS, f"--use-file-for-fake-audio-capture={mic}%noloop"]


def write_speech(path: Path, text: str, voice: str = "slt", pad_s: float = 0.6) -> float:
    """``text`` spoken by flite's ``voice`` into the WAV at ``path`` (silence around it, since recording starts
    a moment after the capture does); its duration in seconds."""
    audio, rate = flite_speak(text, voice)
    padded = np.concatenate([silence(pad_s, rate), audio, silence(pad_s, rate)])
    path.write_bytes(wav_bytes(padded, rate))
    return padded.size / rate


@dataclass
class PageWatch:
    """Everything that went wrong in a page: console errors, uncaught exceptions, failed requests."""

    problems: list[str] = field(default_factory=list)
    # (status, path pattern) a test expects to see refused, e.g. (429, "/v1/tts/generate")
    allowed: list[tuple[int, str]] = field(default_factory=list)
    is_navigating: bool = False

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _expected(self, status: int, url: str) -> bool:
        return any(status == code and re.search(pattern, url) for code, pattern in self.allowed)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Chromium logs every 4xx/5xx fetch as "Failed to load resource: ... status of N"; expected ones pass.
        found = re.search(r"status of (\d+)", message.text)
        url = str(message.location.get("url", ""))
        if found and self._expected(int(found.group(1)), url):
            return
        self.problems.append(f"console error: {message.text} ({url})")

    def _failed(self, request: Request) -> None:
        # An <audio> element reading its blob: cancels its first read once it has what it needs ("aborted").
        aborted = request.failure == "net::ERR_ABORTED"
        if aborted and request.url.startswith("blob:") and request.resource_type == "media":
            return
        if aborted and self.is_navigating:  # left behind by a reload
            return
        self.problems.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not self._expected(response.status, response.url):
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    @contextmanager
    def navigating(self) -> Iterator[None]:
        self.is_navigating = True
        try:
            yield
        finally:
            self.is_navigating = False

    @contextmanager
    def allowing(self, status: int, pattern: str) -> Iterator[None]:
        self.allowed.append((status, pattern))
        try:
            yield
        finally:
            self.allowed.remove((status, pattern))


class Shots:
    """Screenshots of each screen: in the test's tmp dir and in test-artifacts/playground/ (ignored by git)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> Path:
        path = self.tmp / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copyfile(path, ARTIFACTS / path.name)
        return path
