"""Real servers for end-to-end tests: `chorus serve` in a subprocess on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import yaml

STARTUP_TIMEOUT_S = 60
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/v1/stats", timeout=10).json())


def start_server(tmp_path: Path, config: dict[str, object], *, launcher: list[str] | None = None) -> Server:
    """`chorus serve` (or ``launcher`` + its arguments) with ``config``, ready to answer."""
    port = free_port()
    config = {**config, "server": {"host": "127.0.0.1", "port": port, **dict(config.get("server", {}))}}  # type: ignore[arg-type]
    config.setdefault("data_dir", str(tmp_path / "data"))
    path = tmp_path / f"chorus-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*(launcher or [sys.executable, "-m", "chorus.cli"]), "serve", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not ready in {STARTUP_TIMEOUT_S} s:\n{server.log()}")


def stop_server(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server (bundled voice, default settings)."""
    srv = start_server(tmp_path_factory.mktemp("server"), {})
    yield srv
    assert stop_server(srv) in (0, -signal.SIGTERM), srv.log()
    assert "Application shutdown complete" in srv.log()


@pytest.fixture()
def one_slot_server(tmp_path: Path) -> Iterator[Server]:
    """One slot and a one-place queue: easy to fill (and waits up to a minute allowed, so a queued request waits)."""
    srv = start_server(tmp_path, {"worker": {"max_slots": 1}, "server": {"queue_limit": 1, "max_queue_wait_s": 60}})
    yield srv
    stop_server(srv)


LONG_TEXT = " ".join(
    [
        "This is a long passage that keeps the engine busy for a good while, sentence after sentence.",
        "It talks about rivers, mountains, cities and the weather, with nothing of importance to say.",
    ]
    * 12
)


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30.0, every_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy (returned), or fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
