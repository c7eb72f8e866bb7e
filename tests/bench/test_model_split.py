"""``bench/model_split.py``'s arithmetic, on a hand-computed case."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "model_split.py"


def test_split_of_one_threads_totals() -> None:
    spec = importlib.util.spec_from_file_location("model_split", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # 11 s of CPU for 100 s of audio: decoder 7.7 s, encoder 1.65 s, flow 1.1 s, the rest 0.55 s; 1040 frames
    # decoded for 1000 output frames.
    got = module.split(11.0, 100.0, {"decode": 7.7, "encode": 1.65, "run_flow": 1.1}, 1040, 1000)
    assert got["core_s_per_audio_s"] == pytest.approx(0.11)
    assert got["decode_share"] == pytest.approx(0.70)
    assert got["encode_share"] == pytest.approx(0.15)
    assert got["run_flow_share"] == pytest.approx(0.10)
    assert got["other_share"] == pytest.approx(0.05)
    assert got["decoder_context_overhead"] == pytest.approx(0.04)
    # A graph without a separate flow: its share is 0 and the rest is what the other parts left.
    assert module.split(2.0, 10.0, {"decode": 1.5}, 10, 10)["other_share"] == pytest.approx(0.25)
