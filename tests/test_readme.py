"""The README's promises: the Quickstart has exactly two commands and its library example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_quickstart_is_two_commands_and_ci_runs_the_second() -> None:
    block = re.search(r"```bash\n(.*?)```", section("Quickstart"), re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert "chorus serve" in commands[0]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert commands[1] in ci.replace("exec ", "")


def test_library_example_runs() -> None:
    block = re.search(r"```python\n(.*?)```", section("Use it").split("### Library API")[1], re.S)
    assert block is not None
    proc = subprocess.run([sys.executable, "-c", block.group(1)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "s of audio" in proc.stdout


def test_the_webhook_verification_snippet_is_the_tested_one() -> None:
    """tests/webhooks/test_signing.py runs the snippet in chorus.webhooks.signing; the README shows that one."""
    from chorus.webhooks import signing

    assert signing.__doc__ is not None
    tested = re.search(r"```python\n(.*?)```", signing.__doc__, re.S)
    assert tested is not None
    assert f"```python\n{tested.group(1)}```" in section("Operations")
