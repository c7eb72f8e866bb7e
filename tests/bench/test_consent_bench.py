"""`chorus bench-consent --quick` runs end to end and its figures are what its trials say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chorus.bench.consent import CASES, THRESHOLDS, Trials, choose_threshold


def test_the_threshold_is_chosen_on_genuine_attempts_against_other_speakers() -> None:
    trials = Trials()
    trials.attempts["genuine"] = [(True, 0.90), (True, 0.86), (True, 0.95)]
    trials.attempts["genuine_channel"] = [(True, 0.84), (True, 0.88)]
    trials.attempts["other_speaker"] = [(True, 0.70), (True, 0.78), (False, 0.95)]
    trials.attempts["bundled_voice"] = [(True, 0.60)]
    trials.attempts["clone"] = [(True, 0.89)]  # not part of the choice: it would push the genuine speaker out
    # Every genuine attempt passes at ≤ 0.84 and every other speaker fails above 0.78: 0.800 and 0.825 tie.
    assert choose_threshold(trials) == 0.8
    assert trials.accepted("genuine", 0.875) == pytest.approx(2 / 3)
    assert trials.accepted("other_speaker", 0.6) == pytest.approx(2 / 3)  # the phrase was not heard in one
    # A miss no threshold changes (a phrase not heard) caps the worst case at 3/4 from 0.725 (no other speaker
    # passes) to 0.825 (every genuine one does): the middle of that range wins.
    trials.attempts["genuine"].append((False, 0.90))
    trials.attempts["other_speaker"] = [(True, 0.62), (True, 0.70)]
    assert choose_threshold(trials) == 0.775


@pytest.mark.slow
def test_quick_run_writes_its_tables(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench-consent", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "consent.json").read_text())
    assert result["threshold"] in THRESHOLDS and (tmp_path / "consent.png").stat().st_size > 10_000
    for name in ("dev", "test"):
        at = result["sets"][name]["at_threshold"]
        assert set(at) == set(CASES)
        assert at["genuine"] == 1.0 and at["wrong_phrase"] == 1.0 and at["clone_marked"] == 1.0
    assert result["challenge_rules"] == {"trials": 5, "expired": 5, "used": 5, "fresh_accepted": 5}


@pytest.mark.slow
def test_phrase_errors_run_counts_every_reading_with_both_grammars(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench-consent", "--phrase-errors", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "consent-phrases.json").read_text())
    assert result["readings"] == 2 * len(result["speakers"]) == 12
    for name in result["grammars"]:
        per_speaker = [row["counts"][name] for row in result["speakers"]]
        assert result["totals"][name]["misheard"] == sum(c["misheard"] for c in per_speaker)
        assert [len(row["misheard"][name]) for row in result["speakers"]] == [c["misheard"] for c in per_speaker]
        # 12 clear readings: a grammar that refuses most of them, or accepts another phrase, is broken
        assert result["totals"][name]["misheard"] <= 2 and result["totals"][name]["false_accepts"] == 0
    assert (tmp_path / "consent-phrases.png").stat().st_size > 10_000
    assert "| all | 12 |" in (tmp_path / "consent-phrases.md").read_text()
