"""A dataset's report, clip by clip, on real speech (flite): measurements, duplicates, transcripts, speakers."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from chorus.audio.decode import decode_audio
from chorus.finetune.dataset_report import ClipReport, analyse_clip, evenly, mark_duplicates, totals
from chorus.finetune.dataset_speakers import DatasetSpeakerError, check_speakers
from chorus.finetune.dataset_transcripts import TranscriptChecker
from tests.voices.speech import PARAGRAPH, encode, flite_speak, silence, wav_bytes


def clip(name: str, data: bytes, text: str = "t") -> tuple[ClipReport, tuple[np.ndarray, float] | None]:
    report = ClipReport(name, text)
    return report, analyse_clip(report, data)


def test_a_clip_is_measured_as_uploaded() -> None:
    speech, rate = flite_speak(PARAGRAPH[0])
    padded = np.concatenate([silence(0.5, rate), speech, silence(0.5, rate)])
    stereo = np.stack([padded, padded])
    report, _ = clip("a.wav", wav_bytes(stereo, rate))
    assert (report.sample_rate, report.channels, report.problems) == (rate, 2, [])
    assert report.duration_s == pytest.approx(padded.size / rate, abs=1e-3)
    assert speech.size / rate - 0.8 < (report.speech_s or 0) <= speech.size / rate + 0.3
    assert report.clipping == 0 and report.snr_db is not None and report.snr_db > 40  # flite's pauses are silent

    noise = np.random.default_rng(0).standard_normal(padded.size).astype(np.float32) * 0.05
    noisy, _ = clip("n.wav", wav_bytes(padded + noise, rate))
    assert noisy.snr_db is not None and noisy.snr_db < 15 and "noisy" in noisy.problems and noisy.is_kept
    loud, _ = clip("c.wav", wav_bytes(np.clip(padded * 20, -1, 1), rate))
    assert "clipped" in loud.problems and loud.clipping is not None and loud.clipping > 0.005 and loud.is_kept


def test_unusable_clips_are_excluded_with_a_reason() -> None:
    rate = 8000
    assert clip("x.wav", b"RIFF not really")[0].problems == ["undecodable"]
    assert clip("s.wav", wav_bytes(silence(2.0, rate), rate))[0].problems == ["no_speech", "low_sample_rate"]
    long, fingerprint = clip("l.wav", wav_bytes(silence(61.0, rate), rate))
    assert long.problems == ["too_long"] and long.duration_s == pytest.approx(61.0) and fingerprint is None
    assert not long.is_kept


def test_the_same_audio_is_a_duplicate_however_it_was_encoded() -> None:
    a, rate = flite_speak(PARAGRAPH[1])
    b, _ = flite_speak(PARAGRAPH[2])
    quieter = decode_audio(wav_bytes(0.5 * a, rate))[0]
    measured = [
        clip("a.wav", wav_bytes(a, rate)),
        clip("b.wav", wav_bytes(b, rate)),
        clip("a-copy.wav", wav_bytes(a, rate)),  # the same bytes
        clip("a.mp3", encode(quieter, rate, "mp3")),  # the same audio, quieter and re-encoded
        clip("a-padded.wav", wav_bytes(np.concatenate([silence(0.4, rate), a]), rate)),
        clip("same-words-other-voice.wav", wav_bytes(*flite_speak(PARAGRAPH[1], "rms"))),
    ]
    clips = [c for c, _ in measured]
    mark_duplicates(clips, {c.file_name: p for c, p in measured if p is not None})
    assert {c.file_name: c.duplicate_of for c in clips} == {
        "a.wav": None,
        "b.wav": None,
        "a-copy.wav": "a.wav",
        "a.mp3": "a.wav",
        "a-padded.wav": "a.wav",
        "same-words-other-voice.wav": None,
    }
    summary = totals(clips)
    assert (summary["clips"], summary["kept"], summary["problems"]) == (6, 3, {"duplicate": 3})


def test_samples_are_spread_evenly() -> None:
    assert evenly(list(range(10)), 3) == [1, 5, 8]
    assert evenly(list(range(4)), 8) == [0, 1, 2, 3]
    assert evenly(list(range(100)), 1) == [50]


def test_transcripts_are_checked_against_what_the_clip_says() -> None:
    checker = TranscriptChecker()
    audio, rate = flite_speak(PARAGRAPH[3])
    right = checker.check_transcript(audio, rate, PARAGRAPH[3])
    assert (right.status, right.wer) == ("ok", 0.0)
    assert right.heard == "somewhere a radio played an old song that everybody seemed to know the words to"
    wrong = checker.check_transcript(audio, rate, PARAGRAPH[4])
    assert wrong.status == "mismatch" and wrong.wer is not None and wrong.wer > 0.5
    assert checker.check_transcript(audio, rate, "The blorptastic radio.").to_json() == {
        "status": "unchecked",
        "reason": "words the recogniser does not know: blorptastic",
    }
    assert checker.check_transcript(audio, rate, "Route 66").status == "unchecked"


class Vectors:
    """An embedder that returns the vector a clip's first sample names (speakers on demand)."""

    SPEAKERS: ClassVar[dict[int, list[float]]] = {1: [1.0, 0.1, 0.0], 2: [0.1, 1.0, 0.0], 3: [0.0, 0.1, 1.0]}

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return np.asarray(self.SPEAKERS[int(audio[0])], np.float32)


def speakers(*ids: int) -> list[tuple[str, np.ndarray, int]]:
    return [(f"{n}-{s}.wav", np.full(4, s, np.float32), 16_000) for n, s in enumerate(ids)]


def test_speakers_are_compared_with_the_consent_and_each_other() -> None:
    consent = np.asarray(Vectors.SPEAKERS[1], np.float32)
    kwargs = {"encoder": Vectors(), "consent": consent, "threshold": 0.75, "consent_id": "cons_1"}
    done = check_speakers(speakers(1, 1, 1), **kwargs)  # type: ignore[arg-type]
    assert len(done.scores) == 3 and np.linalg.norm(done.embedding) == pytest.approx(1.0)
    assert all(s.consent_similarity == pytest.approx(1.0) for s in done.scores)

    with pytest.raises(DatasetSpeakerError) as other:
        check_speakers(speakers(2, 2, 2), **kwargs)  # type: ignore[arg-type]
    assert other.value.code == "speaker_mismatch" and len(other.value.clips) == 3
    with pytest.raises(DatasetSpeakerError) as mixed:
        check_speakers(speakers(1, 1, 3, 1, 2), **kwargs)  # type: ignore[arg-type]
    assert mixed.value.code == "mixed_speakers" and [c.file_name for c in mixed.value.clips] == ["2-3.wav", "4-2.wav"]
    assert "2-3.wav, 4-2.wav" in mixed.value.message
    # Without a consent (a server whose operator vouches for every clip) the clips must still agree.
    with pytest.raises(DatasetSpeakerError) as unconsented:
        check_speakers(speakers(3, 3, 3, 2), encoder=Vectors(), consent=None, threshold=0.75, consent_id=None)
    assert unconsented.value.code == "mixed_speakers" and [c.file_name for c in unconsented.value.clips] == ["3-2.wav"]
