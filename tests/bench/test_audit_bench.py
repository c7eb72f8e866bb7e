"""`chorus bench-audit` writes a verified chain and reports what it measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chorus.bench.audit import run


def test_a_small_run_writes_and_verifies_every_row(tmp_path: Path) -> None:
    args = argparse.Namespace(rows=50, repeats=2, database_url=None, out=tmp_path)
    assert run(args) == 0  # run_once raises unless the chain verifies with every row
    result = json.loads((tmp_path / "audit.json").read_text())
    assert result["database"] == "sqlite"
    for key in ("record_p50_us", "record_p99_us", "write_rows_per_s", "verify_rows_per_s"):
        cell = result["results"][key]
        assert 0 < cell["min"] <= cell["median"] <= cell["max"]
