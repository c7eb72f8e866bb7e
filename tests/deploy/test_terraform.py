"""deploy/terraform: formatted, checkov clean except for justified skips, every variable and output described,
and the example tfvars sets only declared variables. `terraform validate` needs the AWS provider, which cannot
be downloaded here (deploy/README.md says how far validation goes)."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.deploy.tools import DEPLOY, assert_only_skipped, run_checkov, system_tool

TERRAFORM = DEPLOY / "terraform"


def blocks(kind: str) -> dict[str, str]:
    """name -> body of each top-level `kind "name" { ... }` block (the module is fmt-clean: bodies end at ^})."""
    found = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(rf'^{kind} "([^"]+)" {{\n(.*?)^}}', text, re.M | re.S):
            found[match.group(1)] = match.group(2)
    return found


def test_fmt_check() -> None:
    done = subprocess.run(
        [system_tool("terraform"), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def checkov_failures() -> list[Any]:
    return run_checkov("terraform", directory=TERRAFORM)


def test_checkov_fails_only_justified_checks(checkov_failures: list[Any]) -> None:
    assert_only_skipped(checkov_failures, "terraform")


def test_variables_and_outputs_are_described() -> None:
    for kind in ("variable", "output"):
        found = blocks(kind)
        assert found, kind
        undescribed = [name for name, body in found.items() if not re.search(r'^\s+description\s+= "\S', body, re.M)]
        assert not undescribed, f"{kind}s without a description: {undescribed}"


def test_example_tfvars_sets_only_declared_variables() -> None:
    declared = set(blocks("variable"))
    text = (TERRAFORM / "example.tfvars").read_text(encoding="utf-8")
    assigned = set(re.findall(r"^(\w+)\s*=", text, re.M))
    assert assigned and assigned <= declared, assigned - declared
    required = {name for name, body in blocks("variable").items() if "default" not in body}
    assert required <= assigned, f"required variables missing from the example: {required - assigned}"


def test_database_and_bucket_are_private_and_encrypted() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in TERRAFORM.glob("*.tf"))
    assert re.search(r"publicly_accessible\s+= false", text) and re.search(r"storage_encrypted\s+= true", text)
    assert re.search(r"backup_retention_period\s+= var\.db_backup_retention_days", text)
    for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert re.search(rf"{setting}\s+= true", text), setting
    assert 'status = "Enabled"' in text and '"aws:kms"' in text
    assert re.search(r"capacity_type\s+= var\.gpu_capacity_type", text), "the GPU pool's spot/on-demand switch"
