"""Qwen3-TTS training examples: what a clip becomes (text ids, codec frames, speaker embedding), and the talker
sequence a batch of them is laid out as.

The layout is the one the served fine-tuned voice is decoded with: a Base model, an x-vector-only voice prompt
(the speaker embedding of one reference clip) and ``generate_voice_clone`` in its default streaming mode, which is
how ``chorus.models.qwen3.backend`` calls it. Per example, with ``ids`` the tokenised
``"<|im_start|>assistant\\n{text}<|im_end|>\\n<|im_start|>assistant\\n"`` (N ids, M = N - 8 of them the text) and
K = 6 codec prefix rows (7 with a language)::

    position      text channel                      codec channel
    0..2          ids[0:3] (role)                   -
    3..P-4        tts_pad                           nothink, think_bos, think_eos | think, think_bos, lang, think_eos
    P-3           tts_pad                           speaker slot (the speaker embedding replaces the row)
    P-2           tts_bos                           codec_pad
    P-1           ids[3] (first text token)         codec_bos
    P+t, t < T    ids[4+t] / tts_eos / tts_pad      frame t: codebook 0 + embeddings of codebooks 1..15

with P = 3 + K. The hidden state at P-1+t predicts code 0 of frame t, and the one at P-1+T predicts codec_eos.

The public recipe (Qwen3-TTS ``finetuning/dataset.py``) lays the sequence out as the library's *non-streaming*
mode does instead: all the text first (over codec_pad), tts_eos, then codec_bos and the frames over tts_pad. The
talker is then trained on a prompt that serving never feeds it; we follow inference, where the text is fed one
token per frame alongside the audio. ``tests/finetune/test_qwen3_samples.py`` checks the prefix and the text rows
against the prompt the library itself builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chorus.audio.resample import resample

SAMPLE_RATE = 24_000  # the 12 Hz codec's and the speaker encoder's rate
ROLE_TOKENS = 3  # "<|im_start|>assistant\n"
TAIL_TOKENS = 5  # "<|im_end|>\n<|im_start|>assistant\n"
IGNORE = -100  # cross_entropy's ignore_index


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One clip, ready to train on."""

    text_ids: torch.Tensor  # [N] long: the assistant turn, tokenised as inference tokenises it
    codes: torch.Tensor  # [T, num_code_groups] long: the clip's codec frames
    speaker: torch.Tensor  # [H] float32: x-vector of the voice's reference clip
    language_id: int | None = None  # codec language row; None = "auto"

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[0])


@dataclass(frozen=True, slots=True)
class SpecialIds:
    """The text and codec ids the layout needs, read from the model's config."""

    tts_pad: int
    tts_bos: int
    tts_eos: int
    codec_pad: int
    codec_bos: int
    codec_eos: int
    codec_think: int
    codec_nothink: int
    codec_think_bos: int
    codec_think_eos: int

    @classmethod
    def from_config(cls, config: Any) -> SpecialIds:
        """``config``: the ``Qwen3TTSConfig`` (``tts.model.config``)."""
        t = config.talker_config
        return cls(
            tts_pad=int(config.tts_pad_token_id),
            tts_bos=int(config.tts_bos_token_id),
            tts_eos=int(config.tts_eos_token_id),
            codec_pad=int(t.codec_pad_id),
            codec_bos=int(t.codec_bos_id),
            codec_eos=int(t.codec_eos_token_id),
            codec_think=int(t.codec_think_id),
            codec_nothink=int(t.codec_nothink_id),
            codec_think_bos=int(t.codec_think_bos_id),
            codec_think_eos=int(t.codec_think_eos_id),
        )

    def codec_prefix(self, language_id: int | None) -> list[int]:
        """Codec rows 3..P-2 as ``Qwen3TTSForConditionalGeneration.generate`` builds them (-1 = speaker slot)."""
        if language_id is None:
            think = [self.codec_nothink, self.codec_think_bos, self.codec_think_eos]
        else:
            think = [self.codec_think, self.codec_think_bos, language_id, self.codec_think_eos]
        return [*think, -1, self.codec_pad]


@dataclass(frozen=True, slots=True)
class TrainingBatch:
    """Examples laid out side by side, right-padded to the longest (B rows, S positions)."""

    text_ids: torch.Tensor  # [B, S] long, 0 where text_mask is False
    text_mask: torch.Tensor  # [B, S] bool: the position has a text row
    codec_ids: torch.Tensor  # [B, S] long: codebook-0 / special codec id, 0 where codec_mask is False
    codec_mask: torch.Tensor  # [B, S] bool: the position has a codec row (the speaker slot has none)
    speaker_mask: torch.Tensor  # [B, S] bool: the speaker slot
    speakers: torch.Tensor  # [B, H] float32
    frame_codes: torch.Tensor  # [B, S, G] long: the codes of the frame fed at the position (0 elsewhere)
    frame_mask: torch.Tensor  # [B, S] bool: a frame is fed at the position (add codebooks 1..G-1)
    labels: torch.Tensor  # [B, S] long: the code-0 target of the hidden state AT the position, IGNORE elsewhere
    target_codes: torch.Tensor  # [B, S, G] long: the frame the hidden state at the position predicts
    target_mask: torch.Tensor  # [B, S] bool: the position predicts a frame (not eos): the predictor trains there
    attention_mask: torch.Tensor  # [B, S] long


def encode_examples(
    tts: Any,
    clips: Sequence[tuple[np.ndarray, int, str]],
    reference: tuple[np.ndarray, int],
    *,
    language: str = "auto",
) -> list[TrainingExample]:
    """Clips ``(audio mono float32, sample_rate, transcript)`` → examples, with the speech tokenizer of ``tts``
    (a ``qwen_tts.Qwen3TTSModel``, Base) and the x-vector of ``reference`` ``(audio, sample_rate)`` computed as
    the library computes an x-vector-only voice prompt (the served voice). Deterministic."""
    language_id = _language_id(tts.model.config, language)
    ref_audio = _to_24k(*reference)
    with torch.inference_mode():
        (item,) = tts.create_voice_clone_prompt(ref_audio=(ref_audio, SAMPLE_RATE), x_vector_only_mode=True)
    speaker = item.ref_spk_embedding.detach().to("cpu", torch.float32).clone()
    examples = []
    for audio, sample_rate, text in clips:
        if not text.strip():
            raise ValueError("a training clip needs a non-empty transcript")
        with torch.inference_mode():
            codes = tts.model.speech_tokenizer.encode(_to_24k(audio, sample_rate), sr=SAMPLE_RATE).audio_codes[0]
            # The library's own tokenisation of the assistant turn (what generate_voice_clone feeds).
            (ids,) = tts._tokenize_texts([tts._build_assistant_text(text)])
        if codes.shape[0] < 1:
            raise ValueError(f"clip {text[:40]!r} is too short for one codec frame")
        examples.append(
            TrainingExample(
                text_ids=ids[0].detach().to("cpu", torch.long).clone(),
                codes=codes.detach().to("cpu", torch.long).clone(),
                speaker=speaker,
                language_id=language_id,
            )
        )
    return examples


def collate(examples: Sequence[TrainingExample], ids: SpecialIds) -> TrainingBatch:
    """Lay ``examples`` out as the module docstring shows, right-padded (position ids stay 0..S-1 per row)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    groups = int(examples[0].codes.shape[1])
    rows = [_layout(e, ids) for e in examples]
    size = max(r["length"] for r in rows)
    b = len(rows)
    batch: dict[str, torch.Tensor] = {
        "text_ids": torch.zeros(b, size, dtype=torch.long),
        "text_mask": torch.zeros(b, size, dtype=torch.bool),
        "codec_ids": torch.zeros(b, size, dtype=torch.long),
        "codec_mask": torch.zeros(b, size, dtype=torch.bool),
        "speaker_mask": torch.zeros(b, size, dtype=torch.bool),
        "frame_codes": torch.zeros(b, size, groups, dtype=torch.long),
        "frame_mask": torch.zeros(b, size, dtype=torch.bool),
        "labels": torch.full((b, size), IGNORE, dtype=torch.long),
        "target_codes": torch.zeros(b, size, groups, dtype=torch.long),
        "target_mask": torch.zeros(b, size, dtype=torch.bool),
        "attention_mask": torch.zeros(b, size, dtype=torch.long),
    }
    for i, row in enumerate(rows):
        n = row["length"]
        for name, value in row.items():
            if name != "length":
                batch[name][i, :n] = value
    speakers = torch.stack([e.speaker.float() for e in examples])
    return TrainingBatch(speakers=speakers, **batch)


def _layout(example: TrainingExample, ids: SpecialIds) -> dict[str, Any]:
    """One example's rows, unpadded (see the module docstring)."""
    text_ids, codes = example.text_ids, example.codes
    num_text = text_ids.shape[0] - ROLE_TOKENS - TAIL_TOKENS  # M
    if num_text < 1:
        raise ValueError("an example needs at least one text token")
    prefix = ids.codec_prefix(example.language_id)
    p = ROLE_TOKENS + len(prefix) + 1  # P: role, codec prefix, first text token + codec_bos
    t = codes.shape[0]
    length = p + t
    text = torch.full((length,), ids.tts_pad, dtype=torch.long)
    text[:ROLE_TOKENS] = text_ids[:ROLE_TOKENS]
    text[p - 2] = ids.tts_bos
    text[p - 1] = text_ids[ROLE_TOKENS]
    # Frame t is fed with text token 4 + t, then tts_eos, then tts_pad (the library's trailing_text_hidden).
    trailing = torch.cat([text_ids[ROLE_TOKENS + 1 : ROLE_TOKENS + num_text], torch.tensor([ids.tts_eos])])
    fed = min(t, trailing.shape[0])
    text[p : p + fed] = trailing[:fed]
    text_mask = torch.ones(length, dtype=torch.bool)
    codec = torch.zeros(length, dtype=torch.long)
    codec[ROLE_TOKENS : p - 1] = torch.tensor(prefix).clamp(min=0)
    codec[p - 1] = ids.codec_bos
    codec[p:] = codes[:, 0]
    codec_mask = torch.ones(length, dtype=torch.bool)
    codec_mask[:ROLE_TOKENS] = False
    speaker_mask = torch.zeros(length, dtype=torch.bool)
    speaker_mask[ROLE_TOKENS + prefix.index(-1)] = True
    codec_mask &= ~speaker_mask
    frame_codes = torch.zeros(length, codes.shape[1], dtype=torch.long)
    frame_codes[p:] = codes
    frame_mask = torch.zeros(length, dtype=torch.bool)
    frame_mask[p:] = True
    labels = torch.full((length,), IGNORE, dtype=torch.long)
    labels[p - 1 : length - 1] = codes[:, 0]
    labels[length - 1] = ids.codec_eos
    target_codes = torch.zeros_like(frame_codes)
    target_codes[p - 1 : length - 1] = codes
    target_mask = torch.zeros(length, dtype=torch.bool)
    target_mask[p - 1 : length - 1] = True
    return {
        "length": length,
        "text_ids": text,
        "text_mask": text_mask,
        "codec_ids": codec,
        "codec_mask": codec_mask,
        "speaker_mask": speaker_mask,
        "frame_codes": frame_codes,
        "frame_mask": frame_mask,
        "labels": labels,
        "target_codes": target_codes,
        "target_mask": target_mask,
        "attention_mask": torch.ones(length, dtype=torch.long),
    }


def save_examples(examples: Sequence[TrainingExample], path: Path) -> None:
    """Write examples for ``python -m chorus.finetune.qwen3_train --examples`` (tensors only: weights_only-safe)."""
    rows = [
        {
            "text_ids": e.text_ids,
            "codes": e.codes,
            "speaker": e.speaker,
            "language_id": -1 if e.language_id is None else e.language_id,
        }
        for e in examples
    ]
    torch.save({"format": "chorus-qwen3-examples-1", "examples": rows}, path)


def load_examples(path: Path) -> list[TrainingExample]:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != "chorus-qwen3-examples-1":
        raise ValueError(f"{path}: not a chorus Qwen3 examples file")
    return [
        TrainingExample(
            text_ids=r["text_ids"].long(),
            codes=r["codes"].long(),
            speaker=r["speaker"].float(),
            language_id=None if int(r["language_id"]) < 0 else int(r["language_id"]),
        )
        for r in data["examples"]
    ]


def _language_id(config: Any, language: str) -> int | None:
    name = language.lower()
    if name == "auto":
        return None
    table = config.talker_config.codec_language_id
    if name not in table:
        raise ValueError(f"language {language!r} is not one of this model's: auto, {', '.join(sorted(table))}")
    return int(table[name])


def _to_24k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim != 1:
        raise ValueError(f"clips must be mono, got shape {mono.shape}")
    return resample(mono, sample_rate, SAMPLE_RATE) if sample_rate != SAMPLE_RATE else mono
