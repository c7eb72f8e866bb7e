"""The stand-ins for librosa/torchaudio/sox (chorus.models.qwen3.compat), in an environment where none of them is
installed: the Qwen3 tiny-model tests run there too, and none of them may skip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.isolated_env import REPO, module_command, site_without

pytestmark = pytest.mark.slow
ABSENT = {"librosa", "torchaudio", "sox"}


def test_the_tiny_model_tests_pass_where_librosa_is_not_installed(tmp_path: Path) -> None:
    site = site_without(ABSENT, tmp_path / "site")
    command = module_command(site, "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/models/qwen3/test_tiny.py")
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, tail  # the stand-in tests ran, none skipped


def test_the_environment_really_lacks_them(tmp_path: Path) -> None:
    site = site_without(ABSENT, tmp_path / "site")
    code = (
        "import importlib.util as u, importlib.metadata as m\n"
        "print([u.find_spec(n) is None for n in ('librosa', 'torchaudio', 'sox', 'torch', 'chorus')])\n"
        "print([d for d in ('librosa', 'torchaudio', 'sox') if d in {x.metadata['Name'] for x in m.distributions()}])\n"
    )
    (tmp_path / "probe.py").write_text(code)  # run as a module from its folder (python -c puts the cwd first)
    proc = subprocess.run(module_command(site, "probe"), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split("\n")[:2] == ["[True, True, True, False, False]", "[]"], proc.stdout + proc.stderr
