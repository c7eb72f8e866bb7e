"""Training examples and their layout: the talker is trained on exactly the rows that serving feeds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.finetune.conftest import qwen3_missing, voice

if missing := qwen3_missing():
    pytest.skip(f"not installed: {', '.join(missing)} (the qwen extra)", allow_module_level=True)

import torch

from chorus.finetune.qwen3_loss import input_embeddings, talker_hidden
from chorus.finetune.qwen3_samples import (
    IGNORE,
    SpecialIds,
    TrainingExample,
    collate,
    encode_examples,
    load_examples,
)
from chorus.models.qwen3.prompt import PromptCapture, TalkerPrompt


def served_prompt(tts: Any, text: str, reference: tuple[np.ndarray, int], language: str) -> TalkerPrompt:
    """The prompt the Qwen3 backend serves a registered x-vector voice with (library code, captured)."""
    with torch.inference_mode():
        items = tts.create_voice_clone_prompt(ref_audio=reference, x_vector_only_mode=True)
        return PromptCapture(tts.model.talker).capture(
            lambda: tts.generate_voice_clone(text=text, language=language, voice_clone_prompt=items)
        )


def frame_rows(tts: Any, codes: torch.Tensor) -> torch.Tensor:
    """What the library feeds for frames [T, G]: the sum of the 16 codebook embeddings, [T, H]."""
    talker = tts.model.talker
    tables = talker.code_predictor.get_input_embeddings()
    rows = [talker.get_input_embeddings()(codes[:, 0])] + [tables[g - 1](codes[:, g]) for g in range(1, 16)]
    return torch.stack(rows, dim=1).sum(1)


def test_clips_get_varied_codes_and_one_speaker_embedding(examples: list[TrainingExample]) -> None:
    for e in examples:
        assert e.codes.dtype == torch.long and e.codes.shape[1] == 16 and e.codes.shape[0] >= 5
        assert torch.unique(e.codes).numel() > e.codes.numel() // 4  # not the all-zero codes of empty codebooks
        assert torch.equal(e.speaker, examples[0].speaker)
    assert not torch.equal(examples[0].codes[:5], examples[1].codes[:5])


def test_encoding_is_deterministic(
    tts: Any, clips: list[Any], reference: tuple[Any, int], examples: list[TrainingExample]
) -> None:
    again = encode_examples(tts, clips[:2], reference)
    for a, b in zip(again, examples[:2], strict=True):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.text_ids, b.text_ids)
        assert torch.equal(a.speaker, b.speaker)


@pytest.mark.parametrize(
    ("language", "seconds", "text"),
    [("auto", 1.2, "good day"), ("english", 1.2, "good day"), ("auto", 0.3, "a much longer sentence")],
    ids=["auto", "english", "text-outlasts-audio"],
)
def test_layout_is_the_served_prompt(
    tts: Any, reference: tuple[Any, int], language: str, seconds: float, text: str
) -> None:
    """Prefix rows (role, think/language, speaker x-vector, pad, bos + first text token) equal the library's
    prompt for an x-vector-only clone; frame t's row is its codes plus the text row the library feeds with it
    (text tokens 4.., tts_eos, then tts_pad; cut off when the audio ends first)."""
    (example,) = encode_examples(tts, [(voice(seconds, 24_000, seed=5), 24_000, text)], reference, language=language)
    batch = collate([example], SpecialIds.from_config(tts.model.config))
    prompt = served_prompt(tts, text, reference, language)
    t = example.num_frames
    assert (prompt.trailing.shape[0] < t) == (seconds > 1)
    with torch.no_grad():
        embeds = input_embeddings(tts.model.talker, batch)[0]
        p = prompt.embeds.shape[0]
        assert p == (9 if language == "auto" else 10)
        assert embeds.shape[0] == p + t
        torch.testing.assert_close(embeds[:p], prompt.embeds, rtol=0, atol=1e-6)
        text_rows = torch.cat([prompt.trailing, prompt.pad.expand(t, -1)])[:t]
        torch.testing.assert_close(embeds[p:], frame_rows(tts, example.codes) + text_rows, rtol=0, atol=1e-5)


def test_labels_are_code0_of_the_next_frame_then_eos(tts: Any, examples: list[TrainingExample]) -> None:
    ids = SpecialIds.from_config(tts.model.config)
    batch = collate(examples[:2], ids)
    for row, e in enumerate(examples[:2]):
        t, p = e.num_frames, 9
        labels = batch.labels[row]
        assert torch.equal(labels[p - 1 : p - 1 + t], e.codes[:, 0])  # hidden at P-1+t → frame t
        assert labels[p - 1 + t] == ids.codec_eos
        assert (labels[: p - 1] == IGNORE).all() and (labels[p + t :] == IGNORE).all()
        assert torch.equal(batch.target_codes[row][batch.target_mask[row]], e.codes)
        assert torch.equal(batch.frame_codes[row, p : p + t], e.codes)  # frame t is fed one position later
        assert int(batch.attention_mask[row].sum()) == p + t


def test_right_padding_does_not_change_a_row(tts: Any, examples: list[TrainingExample]) -> None:
    ids = SpecialIds.from_config(tts.model.config)
    short, long = sorted(examples[:2], key=lambda e: e.num_frames)
    talker = tts.model.talker
    with torch.no_grad():
        alone = collate([short], ids)
        together = collate([short, long], ids)
        assert together.attention_mask.shape[1] > alone.attention_mask.shape[1]
        h_alone = talker_hidden(talker, input_embeddings(talker, alone), alone.attention_mask)[0]
        h_both = talker_hidden(talker, input_embeddings(talker, together), together.attention_mask)[0]
    torch.testing.assert_close(h_both[: h_alone.shape[0]], h_alone, rtol=0, atol=1e-5)


def test_examples_file_round_trips(examples: list[TrainingExample], examples_file: Path) -> None:
    loaded = load_examples(examples_file)
    assert len(loaded) == len(examples)
    for a, b in zip(loaded, examples, strict=True):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.text_ids, b.text_ids)
        assert torch.equal(a.speaker, b.speaker) and a.language_id == b.language_id


def test_bad_inputs_are_refused(tts: Any, reference: tuple[Any, int], tmp_path: Path) -> None:
    silence = np.zeros(24_000, dtype=np.float32)
    with pytest.raises(ValueError, match="transcript"):
        encode_examples(tts, [(silence, 24_000, "  ")], reference)
    with pytest.raises(ValueError, match="language"):
        encode_examples(tts, [(silence, 24_000, "hi")], reference, language="klingon")
    with pytest.raises(ValueError, match="mono"):
        encode_examples(tts, [(np.zeros((2, 100), np.float32), 24_000, "hi")], reference)
    (tmp_path / "x.pt").write_bytes(b"not a torch file")
    with pytest.raises(Exception):  # noqa: B017 - torch's own error for foreign bytes
        load_examples(tmp_path / "x.pt")
