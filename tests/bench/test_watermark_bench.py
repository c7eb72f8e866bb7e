"""``chorus bench-watermark``: a small real run (2 Piper clips, 3 espeak-ng clean clips) writes sane results."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from chorus.bench.watermark import ATTACKS, add_arguments, run


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_small_run(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--clips", "2", "--clean", "3", "--repeats", "1", "--out", str(tmp_path)])
    code = run(args)
    result = json.loads((tmp_path / "watermark.json").read_text())
    assert (tmp_path / "watermark.png").stat().st_size > 10_000
    assert set(result) >= {"clips", "strength", "threshold", "snr_db", "attacks", "false_positives", "cost"}
    assert set(result["attacks"]) == set(ATTACKS)
    for row in result["attacks"].values():
        assert row["no payload"]["clips"] == row["payload"]["clips"] == 2
        assert row["no payload"]["detected"] == 2  # every attack, both clips
        assert row["payload"]["payload_wrong"] == 0
    assert result["attacks"]["none"]["payload"]["payload_decoded"] == 2
    fp = result["false_positives"]
    assert fp["clean_clips"] == 3 and fp["detected"] == 0 and fp["max_score"] < result["threshold"]
    assert fp["unmarked_piper_detected"] == fp["wrong_key_detected"] == 0
    assert 0 < result["cost"]["embed_core_s_per_audio_s"] < 0.01
    assert result["snr_db"]["min"] > 20
    assert code == 0
