"""Fine-tuning a Piper voice on a dataset (chorus.finetune.piper_voice, chorus.models.cloning.conversion_dataset):
a dozen clips of one flite speaker (awb) saying different sentences, about a minute of speech."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from chorus.finetune.dataset_service import TrainingClip
from chorus.finetune.piper_voice import (
    PiperTrainingStopped,
    PiperVoiceResult,
    pick_held_out,
    pick_reference,
    train_piper_voice,
)
from chorus.models.base import SpeechInput
from chorus.models.cloning.conversion_dataset import ParallelClip, fit_dataset
from chorus.models.piper import PiperBackend
from chorus.voices.embedding import SpeakerEncoder
from tests.voices.speech import OTHER_SENTENCE, PARAGRAPH, SENTENCE, SHORT_SENTENCE, flite_speak

SPEAKER = "awb"
TEXTS = [*PARAGRAPH, SENTENCE, OTHER_SENTENCE, SHORT_SENTENCE]  # 12 clips, 1.6-5.5 s each
HOLDOUT = 3
Trained = tuple[PiperVoiceResult, list[dict[str, object]]]  # the result and its progress events


@pytest.fixture(scope="module")
def clips() -> list[TrainingClip]:
    return [TrainingClip(f"clip{i:02d}.wav", *flite_speak(text, SPEAKER), text) for i, text in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def trained(piper: PiperBackend, clips: list[TrainingClip]) -> Trained:
    events: list[dict[str, object]] = []
    result = train_piper_voice(
        piper, clips, holdout=HOLDOUT, seed=0, on_progress=events.append, encoder=SpeakerEncoder()
    )
    return result, events


def test_the_dataset_voice_loads_and_speaks(piper: PiperBackend, trained: Trained) -> None:
    result, _ = trained
    piper.load_voice("voice_dataset_test", result.model)
    try:
        inp = SpeechInput("dataset-voice", "The dataset voice says a new sentence.", "voice_dataset_test")
        (slot,) = piper.prefill([(inp, piper.preprocess(inp))])
        parts = []
        while not slot.is_finished:
            out = piper.step([slot])[0]
            assert out.error is None
            parts.append(out.audio)
        parts.append(piper.flush(slot))
        piper.release(slot)
    finally:
        piper.unload_voice("voice_dataset_test")
    audio = np.concatenate(parts)
    assert audio.size > piper.sample_rate and np.all(np.isfinite(audio))
    assert float(np.sqrt(np.mean(audio**2))) > 0.01


def test_the_report_names_what_was_fitted_and_what_was_held_out(trained: Trained, clips: list[TrainingClip]) -> None:
    result, events = trained
    report = result.report
    names = [c.file_name for c in clips]
    fit, held_out = report["clips_fit"], report["clips_held_out"]
    assert len(held_out) == HOLDOUT and not set(fit) & set(held_out)
    assert sorted(fit + held_out + list(report["clips_skipped"])) == sorted(names)
    # The baseline's clip is the one a user would register (the longest, all are under 15 s), fitted on by both.
    longest = max(range(len(clips)), key=lambda i: clips[i].audio.size / clips[i].sample_rate)
    assert result.reference_index == longest and report["reference_clip"] == names[longest] in fit
    seconds = {c.file_name: c.audio.size / c.sample_rate for c in clips}
    assert report["fit_minutes"] == pytest.approx(sum(seconds[n] for n in fit) / 60, abs=1e-3)
    assert report["held_out_minutes"] == pytest.approx(sum(seconds[n] for n in held_out) / 60, abs=1e-3)
    assert SHORT_SENTENCE not in [clips[names.index(n)].text for n in held_out]  # held-out clips are >= 2 s
    assert report["fit_seconds"] > 0 and 0 < report["gmm_frames"] <= report["pairs"]
    sim = report["similarity"]
    assert [row["clip"] for row in sim["per_clip"]] == held_out
    for key in ("piper", "one_clip", "dataset", "one_clip_to_mean", "dataset_to_mean"):
        assert sim[key] == pytest.approx(np.mean([row[key] for row in sim["per_clip"]]), abs=1e-4)
    assert sim["gain"] == pytest.approx(sim["dataset"] - sim["one_clip"], abs=2e-4)
    assert sim["gain_to_mean"] == pytest.approx(sim["dataset_to_mean"] - sim["one_clip_to_mean"], abs=2e-4)
    assert "held-out" in sim["measure"]
    stages = [(e["stage"], e["done"]) for e in events]
    assert stages == [
        *(("analyse", i) for i in range(1, len(fit) + 1)),
        *(("fit", i) for i in range(1, 4)),
        *(("measure", i) for i in range(1, HOLDOUT + 1)),
    ]


def test_the_dataset_voice_is_more_like_the_speaker_on_held_out_clips(
    trained: Trained,
) -> None:
    sim = trained[0].report["similarity"]
    # Both conversions are far above unconverted Piper (~0.5 against awb).
    assert sim["one_clip"] > sim["piper"] + 0.2 and sim["dataset"] > sim["piper"] + 0.2
    # Measured (seed 0; 9 one-sentence clips, 0.67 min fitted; 3 held out): one-clip 0.811, dataset 0.849, gain
    # +0.038 (per clip +0.028, +0.054, +0.032); against the held-out clips' mean embedding 0.818 -> 0.853. The
    # one-clip voice here has a 5.3 s reference: against a 10-12 s one, the gain is ~0 (see piper_voice's docstring).
    # Asserted with room for BLAS / platform rounding, not for a loss.
    assert sim["gain"] > 0.01 and sim["gain_to_mean"] > 0.01
    assert all(row["dataset"] > row["one_clip"] for row in sim["per_clip"])


def test_the_same_seed_gives_the_same_model(piper: PiperBackend, clips: list[TrainingClip]) -> None:
    parallel = [ParallelClip(c.file_name, c.audio, c.sample_rate, c.text) for c in clips[:2]]
    # A clip whose transcript is not what it says (a short clip with a long text) is skipped, saying why.
    mismatched = ParallelClip("wrong.wav", clips[-1].audio, clips[-1].sample_rate, " ".join(PARAGRAPH[:3]))
    data = [parallel[0], mismatched, parallel[1]]
    render = functools.cache(piper.render)  # deterministic: rendered once for both fits

    def fit(seed: int) -> bytes:  # max_pairs below the pairs found: the seeded sampling is used
        return fit_dataset(data, render, sample_rate=piper.sample_rate, seed=seed, max_pairs=300).model.to_bytes()

    first = fit_dataset(data, render, sample_rate=piper.sample_rate, seed=0, max_pairs=300)
    assert first.clips_used == tuple(c.name for c in parallel) and list(first.clips_skipped) == ["wrong.wav"]
    assert "transcript" in first.clips_skipped["wrong.wav"]
    assert first.num_pairs > first.num_gmm_frames == 300
    assert fit(0) == first.model.to_bytes()


def test_should_stop_gives_the_work_back(piper: PiperBackend, clips: list[TrainingClip]) -> None:
    events: list[dict[str, object]] = []
    with pytest.raises(PiperTrainingStopped, match="analyse"):
        train_piper_voice(piper, clips, holdout=HOLDOUT, should_stop=lambda: True, on_progress=events.append)
    assert events == [{"stage": "analyse", "done": 1, "total": len(clips) - HOLDOUT}]


def test_too_few_clips_or_no_holdout_is_refused(piper: PiperBackend, clips: list[TrainingClip]) -> None:
    with pytest.raises(ValueError, match="holdout"):
        train_piper_voice(piper, clips, holdout=0)
    with pytest.raises(ValueError, match="need at least"):
        train_piper_voice(piper, clips[:4], holdout=3)


def _silent_clips(seconds: list[float]) -> list[TrainingClip]:
    return [TrainingClip(f"{i}.wav", np.zeros(int(s * 100), np.float32), 100, "") for i, s in enumerate(seconds)]


def test_the_reference_is_the_longest_clip_up_to_15_seconds() -> None:
    clips = _silent_clips([4.0, 16.0, 12.0, 20.0, 14.5, 3.0])
    assert pick_reference(clips) == [4, 2, 0, 5, 1, 3]


def test_held_out_clips_are_spread_seeded_and_long_enough() -> None:
    clips = _silent_clips([3.0] * 5 + [1.0] + [3.0] * 14)
    picked = pick_held_out(clips, 4, seed=0, exclude=0)
    assert picked == pick_held_out(clips, 4, seed=0, exclude=0) and len(set(picked)) == 4
    assert 0 not in picked and 5 not in picked
    pool = [i for i in range(20) if i not in (0, 5)]  # 18 clips in 4 strata: [0, 4), [4, 9), [9, 14), [14, 18)
    assert all(lo <= pool.index(i) < hi for i, lo, hi in zip(picked, [0, 4, 9, 14], [4, 9, 14, 18], strict=True))
    assert any(pick_held_out(clips, 4, seed=s, exclude=0) != picked for s in range(1, 5))
