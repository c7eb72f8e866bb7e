"""Shared by the test-service helpers: free ports, commands with readable failures, the error they raise."""

from __future__ import annotations

import os
import socket
import subprocess

START_TIMEOUT_S = 60


class ServiceError(RuntimeError):
    """A service could not be installed or started; the message says why (with the tail of its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], what: str, timeout: float = 300) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServiceError(f"{what}: {e}") from e
    if proc.returncode != 0:
        raise ServiceError(f"{what} failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}")


def alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
