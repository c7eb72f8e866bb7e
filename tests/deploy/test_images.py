"""The Dockerfiles: hadolint clean, checkov clean except for justified skips, and the rules deploy/README.md
states (non-root, read-only root filesystem friendly, /health checked with urllib, weights never baked in).
No Docker daemon runs here, so nothing is built."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.deploy.tools import REPO, assert_only_skipped, run_checkov, tool

DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name: str) -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(REPO / name)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def checkov_failures() -> list[Any]:
    return run_checkov("dockerfile", files=tuple(REPO / name for name in DOCKERFILES))


def test_checkov_fails_only_justified_checks(checkov_failures: list[Any]) -> None:
    assert_only_skipped(checkov_failures, "dockerfile")


def final_stage(name: str) -> str:
    text = (REPO / name).read_text(encoding="utf-8")
    return text[text.rindex("\nFROM ") :]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_rules(name: str) -> None:
    stage = final_stage(name)
    assert re.search(r"^USER 10001:10001$", stage, re.M), "runs as a numeric non-root user"
    assert re.search(r"^EXPOSE 8000$", stage, re.M)
    assert "CHORUS_SERVER__HOST=0.0.0.0" in stage and "CHORUS_DATA_DIR=/data" in stage
    assert "PYTHONDONTWRITEBYTECODE=1" in stage and "XDG_CACHE_HOME=/tmp/" in stage, "read-only root: caches in /tmp"
    healthcheck = stage[stage.index("HEALTHCHECK") :]
    assert "urllib.request" in healthcheck and "/health" in healthcheck, "slim has no curl"
    assert re.search(r'^CMD \["chorus", "serve"\]$', stage, re.M)


def test_cuda_image_takes_weights_from_a_volume() -> None:
    text = (REPO / "Dockerfile.cuda").read_text(encoding="utf-8")
    assert re.search(r"^FROM nvidia/cuda:[\d.]+-runtime-", text, re.M)
    assert 'pip install --no-deps "qwen-tts==0.1.1"' in text and "[${CHORUS_EXTRAS}]" in text
    assert "CHORUS_MODEL__LOCAL_PATH=/models/" in text
    copies = [line for line in text.splitlines() if line.startswith(("COPY", "ADD"))]
    assert all("model" not in line.lower() for line in copies), copies


def test_dockerignore_sends_only_the_package() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines() if ln and ln[0] != "#"]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!chorus/"} <= set(lines)
