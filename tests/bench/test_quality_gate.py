"""The quality gate: its measures on hand-checkable cases, its pass/fail logic, and an end-to-end run on Piper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chorus.bench.quality_gate import GateBounds, GateReport, Scorer, SentenceScore, gate
from chorus.bench.quality_metrics import (
    Cepstra,
    dtw_path,
    frame_distances,
    mel_cepstral_distortion,
    normalise_words,
    word_error_rate,
    word_errors,
)
from chorus.bench.quality_piper import QUIET, render
from chorus.models.piper import PiperBackend

TEXTS = ("The kettle is on, so the tea will be ready soon.", "Her dog refuses to walk in the snow.")


def _cepstra(rows: list[list[float]], energy: list[float] | None = None) -> Cepstra:
    coefficients = np.asarray(rows, dtype=np.float64)
    return Cepstra(coefficients, np.asarray(energy or [0.0] * len(rows)))


def test_mcd_of_a_single_coefficient_is_the_textbook_formula() -> None:
    # MCD = (10 / ln 10) * sqrt(2 * Σ Δc_d²) over c1..c24; c0 (the level) does not count.
    base = [[0.0] * 25, [0.0] * 25]
    moved = [[5.0, 0.1] + [0.0] * 23, [-3.0] + [0.0] * 24]
    distances = frame_distances(_cepstra(base), _cepstra(moved))
    np.testing.assert_allclose(distances, [10 / np.log(10) * np.sqrt(2) * 0.1, 0.0])


def test_silent_frames_are_left_out() -> None:
    ref = _cepstra([[0.0] * 25] * 3, energy=[0.0, -60.0, -10.0])  # the middle frame is 60 dB under the peak
    cand = _cepstra([[0.0, 1.0] + [0.0] * 23] * 3)
    assert frame_distances(ref, cand).size == 2


def test_mcd_is_zero_for_identical_audio_and_grows_with_noise(piper: PiperBackend) -> None:
    audio = render(piper, TEXTS[0], QUIET)
    assert mel_cepstral_distortion(audio, audio, piper.sample_rate) == 0.0
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(audio.size).astype(np.float32) * np.sqrt(np.mean(audio**2))
    mcd = [mel_cepstral_distortion(audio, audio + noise * 10 ** (-snr / 20), piper.sample_rate) for snr in (40, 30, 20)]
    assert 0.3 < mcd[0] < mcd[1] < mcd[2] < 10


def test_dtw_follows_a_slowed_down_copy() -> None:
    a = np.arange(10, dtype=np.float64)[:, None]
    b = np.repeat(a, 2, axis=0)[:-1]  # every frame twice: 19 frames
    rows, cols = dtw_path(np.abs(a - b.T))
    assert (rows[0], cols[0]) == (0, 0) and (rows[-1], cols[-1]) == (9, 18)
    assert np.all(a[rows, 0] == b[cols, 0])  # only frames with the same value are paired
    with pytest.raises(ValueError, match="factor of two"):
        dtw_path(np.zeros((3, 10)))


def test_word_error_rate_by_hand() -> None:
    assert normalise_words("The cat's hat, on the MAT!") == ["the", "cat's", "hat", "on", "the", "mat"]
    assert word_errors(["the", "cat", "sat", "on", "the", "mat"], ["the", "cat", "sat", "on", "mat"]) == 1
    assert word_errors(["a", "b", "c"], ["x", "a", "c", "d"]) == 3  # insertion, deletion, insertion
    # 1 error in 6 words + 2 errors (substitution, deletion) in 4 words = 3 / 10.
    references, hypotheses = ["the cat sat on the mat", "one two three four"], ["the cat sat on mat", "one too three"]
    assert word_error_rate(references, hypotheses) == pytest.approx(0.3)


def _score(mcd: float, similarity: float, ref_errors: int = 1, cand_errors: int = 1) -> SentenceScore:
    return SentenceScore("t", mcd, similarity, 10, ref_errors, cand_errors, "", "")


BOUNDS = GateBounds(
    max_mean_mcd_db=1.0,
    max_p95_mcd_db=1.5,
    min_mean_similarity=0.98,
    min_similarity=0.95,
    max_wer_increase=0.02,
    min_sentences=4,
)


def test_gate_passes_inside_every_bound() -> None:
    report = GateReport(tuple(_score(0.5, 0.99) for _ in range(4)), BOUNDS)
    assert report.passed and all(c.passed for c in report.checks())
    assert report.wer_increase == 0.0 and report.mean_mcd_db == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("scores", "failing"),
    [
        ([_score(1.2, 0.99)] * 4, {"mean MCD (dB)"}),
        ([_score(0.3, 0.99)] * 3 + [_score(3.0, 0.99)], {"p95 MCD (dB)"}),
        ([_score(0.5, 0.975)] * 4, {"mean speaker similarity"}),
        ([_score(0.5, 0.995)] * 3 + [_score(0.5, 0.94)], {"min speaker similarity"}),
        ([_score(0.5, 0.99, 1, 2)] * 4, {"WER increase (abs.)"}),  # 10 % → 20 % of 40 words
        ([_score(0.5, 0.99)] * 3, {"sentences"}),
    ],
)
def test_gate_fails_on_each_bound(scores: list[SentenceScore], failing: set[str]) -> None:
    report = GateReport(tuple(scores), BOUNDS)
    assert not report.passed
    assert {c.name for c in report.checks() if not c.passed} == failing


def test_fewer_words_lost_than_the_reference_passes() -> None:
    report = GateReport(tuple([_score(0.5, 0.99, 3, 1)] * 4), BOUNDS)
    assert report.wer_increase == pytest.approx(-0.2) and report.passed


@pytest.mark.slow
def test_gate_end_to_end_on_piper(piper: PiperBackend) -> None:
    reference = [render(piper, text, QUIET) for text in TEXTS]
    bounds = GateBounds(min_sentences=len(TEXTS))
    scorer = Scorer()  # one recogniser and speaker encoder for both runs
    same = gate(reference, [a.copy() for a in reference], TEXTS, piper.sample_rate, bounds, scorer=scorer)
    assert same.passed and same.mean_mcd_db == 0.0 and same.min_similarity == pytest.approx(1.0)
    assert same.reference_wer == same.candidate_wer < 0.5  # the recogniser hears most words
    rng = np.random.default_rng(1)
    noisy = [a + 0.1 * np.sqrt(np.mean(a**2)) * rng.standard_normal(a.size).astype(np.float32) for a in reference]
    worse = gate(reference, noisy, TEXTS, piper.sample_rate, bounds, scorer=scorer)  # white noise, 20 dB SNR
    assert not worse.passed and worse.mean_mcd_db > bounds.max_mean_mcd_db
    assert json.loads(json.dumps(worse.to_dict()))["checks"][1]["passed"] is False


@pytest.mark.slow
def test_bench_quality_command_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chorus.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["bench-quality", "--quantization", "none", "--sentences", "1", "--repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 1  # 1 sentence is fewer than the gate needs: a failed gate, by that check alone
    report = json.loads((tmp_path / "quality-float32.json").read_text())
    failed = [c["name"] for c in report["gate"]["checks"] if not c["passed"]]
    assert failed == ["sentences"] and report["gate"]["summary"]["mean_mcd_db"] == 0.0
    assert [t["name"] for t in report["timings"]] == ["float32 reference", "float32"]
    assert (tmp_path / "quality-float32.md").read_text().count("❌") == 1
