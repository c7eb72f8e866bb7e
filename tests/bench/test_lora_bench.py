"""``chorus bench-lora`` runs end to end on the tiny model and writes its report (numbers are the bench's business)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the qwen extra is not installed (scripts/install_qwen.sh)")

from chorus.cli import main


def test_bench_lora_smoke(tmp_path: Path) -> None:
    code = main(
        ["bench-lora", "--batch", "4", "--steps", "2", "--repeats", "1", "--threads", "1", "--out", str(tmp_path)]
    )
    assert code == 0
    report = json.loads((tmp_path / "lora-tiny-cpu.json").read_text())
    assert list(report["step_s"]) == ["none", "merged", "k=1", "k=4"]  # k=16 needs 16 rows
    for name, ratios in report["ratios"].items():
        assert ratios["vs_none"]["median"] > 0
        if name == "none":
            assert ratios["vs_none"]["median"] == 1.0
    assert report["adapter_bytes"] > 0 and report["load"]["count"] == 4
    assert (tmp_path / "lora-tiny-cpu.png").stat().st_size > 0
