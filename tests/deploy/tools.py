"""The deploy tools (checkov, hadolint, kubernetes-validate, jsonschema) live in their own virtualenv.

``tool("checkov")`` finds it, installing it once per session with scripts/install_deploy_tools.sh (idempotent and
quick when up to date). A tool that cannot be had fails the test under CI (CI=true) and skips it, saying why,
elsewhere. The checkov helpers compare failures with the justified skips in deploy/checkov-skips.yaml.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SKIPS_FILE = DEPLOY / "checkov-skips.yaml"
# The Kubernetes version the manifests are validated against (offline schemas in kubernetes-validate).
KUBERNETES_VERSION = "1.34.0"


def unavailable(why: str) -> None:
    """Fail under CI, skip (with the reason) elsewhere: never a silent pass."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: a missing deploy tool is a failure)")
    pytest.skip(why)


def tools_venv() -> Path:
    default = Path.home() / ".cache" / "chorus" / "deploy-tools"
    return Path(os.environ.get("CHORUS_DEPLOY_TOOLS") or default)


@functools.cache
def _install() -> str | None:
    """Run the installer once per session; None when it succeeded, else its error output."""
    script = REPO / "scripts" / "install_deploy_tools.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, check=False)
    return None if done.returncode == 0 else (done.stderr or done.stdout)[-2000:]


def tool(name: str) -> str:
    """Path of ``name`` in the tools virtualenv (python, checkov, hadolint, kubernetes-validate)."""
    error = _install()
    path = tools_venv() / "bin" / name
    if not path.exists():
        unavailable(f"{name} is not in {tools_venv()}: scripts/install_deploy_tools.sh said: {error}")
    return str(path)


def system_tool(name: str) -> str:
    """A tool of the machine, not of the venv (kubectl, terraform)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed")
    assert path is not None  # for the type checker: unavailable() does not return
    return path


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed checkov check."""

    check_id: str
    resource: str
    file_path: str

    def __str__(self) -> str:
        return f"{self.check_id} {self.resource} ({self.file_path})"


def run_checkov(framework: str, *, directory: Path | None = None, files: tuple[Path, ...] = ()) -> list[Failure]:
    """Run checkov offline over a directory or files; the failed checks (checkov's own error fails the test)."""
    args = [tool("checkov"), "--quiet", "--compact", "--skip-download", "-o", "json", "--framework", framework]
    if directory is not None:
        args += ["-d", str(directory)]
    for path in files:
        args += ["-f", str(path)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, env=env)
    if done.returncode not in (0, 1):  # 1 = some check failed
        pytest.fail(f"checkov exited {done.returncode}: {done.stderr[-2000:]}")
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failures: list[Failure] = []
    for report in reports:
        if report.get("summary", {}).get("parsing_errors"):
            pytest.fail(f"checkov could not parse some files: {report['results'].get('parsing_errors')}")
        for check in report.get("results", {}).get("failed_checks", []):
            failures.append(Failure(check["check_id"], check["resource"], check["file_path"]))
    if not reports or not any(r.get("summary", {}).get("passed") for r in reports):
        pytest.fail(f"checkov ran no check for {framework}: {done.stdout[:500]}")
    return failures


def load_skips() -> list[dict[str, Any]]:
    data = yaml.safe_load(SKIPS_FILE.read_text(encoding="utf-8"))
    skips = data["skips"]
    if not isinstance(skips, list):
        raise TypeError(f"{SKIPS_FILE}: skips must be a list")
    return skips


def _covers(skip: dict[str, Any], failure: Failure, framework: str) -> bool:
    return (
        skip["framework"] == framework
        and skip["id"] == failure.check_id
        and any(fnmatch.fnmatchcase(failure.resource, pattern) for pattern in skip["resources"])
    )


def assert_only_skipped(failures: list[Failure], framework: str) -> None:
    """Every failure is justified in deploy/checkov-skips.yaml, and every skip of ``framework`` still matters."""
    skips = load_skips()
    unjustified = [str(f) for f in failures if not any(_covers(s, f, framework) for s in skips)]
    assert not unjustified, "checkov failures without a justified skip:\n" + "\n".join(unjustified)
    stale = [
        s["id"] for s in skips if s["framework"] == framework and not any(_covers(s, f, framework) for f in failures)
    ]
    assert not stale, f"skips in {SKIPS_FILE.name} that match no failure any more (remove them): {stale}"
