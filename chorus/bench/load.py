"""What surrounds a bench run: other load on the machine (``--busy-cores``) and the code it measured."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU, as exactly as /proc/cpuinfo tells (a virtual machine's model name can be as vague as "AMD EPYC":
    family and model tell its generation), and whether it has AVX-512; numbers from two CPUs do not compare."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    if "avx512f" in fields.get("flags", "").split():
        name += ", AVX-512"
    return name


def run_record(args: argparse.Namespace, **body: Any) -> dict[str, Any]:
    """A bench script's result: where and how it ran (commit, date, CPU, cores, its arguments), then ``body``."""
    from chorus.models.base import usable_cores

    return {
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "args": {k: str(v) for k, v in vars(args).items()},
        **body,
    }


def write_result(out: Path, record: dict[str, Any], markdown: list[str]) -> None:
    """``record`` to ``out``.json and ``markdown`` (lines) to ``out``.md, which is also printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    out.with_suffix(".md").write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))
