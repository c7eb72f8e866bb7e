"""What surrounds a bench run: other load on the machine (``--busy-cores``) and the code it measured."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# One process that spins for ever: a core kept busy, as another tenant of the machine would.
SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Keep ``count`` cores busy (one spinning process each) for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


def git_commit(path: Path | None = None) -> str | None:
    """The checkout's commit, with ``+dirty`` when its tracked files differ from it; None outside a checkout."""
    where = path or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit
