"""A tiny random-weight Qwen3-TTS (12 Hz) model folder for tests: a real checkpoint's layout, special ids and
frame size, a few million parameters, built in well under a second on a CPU (after the imports).

The folder loads with ``qwen_tts.Qwen3TTSModel.from_pretrained`` (or :func:`load_qwen3`) like a downloaded one::

    config.json, generation_config.json, model.safetensors     talker (+ speaker encoder for kind="base")
    vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json   Qwen2TokenizerFast
    speech_tokenizer/{config.json, model.safetensors, preprocessor_config.json}   12 Hz codec (Mimi encoder, decoder)

Real: the codec vocabulary (3072: codes 0..2047, specials 2048..3071 with the real pad/bos/eos/think and language
ids), 16 code groups, 24 kHz and 1920 samples (80 ms) per frame, the prompt template and its special text tokens
(numbered right after the small vocab: ``TEXT_SPECIAL_IDS``), the nine CustomVoice speakers (at ids ``3000 + i``)
with Dylan/Eric as dialect speakers, generation_config.json. Everything else is small and random: the audio is
noise (mean |x| ≈ 0.05, never silence), and a random talker rarely emits EOS: callers cap the frames, or build
with ``eos_bias``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from chorus.models.qwen3.compat import import_qwen_tts, load_qwen3
from chorus.testing.qwen3_tiny_config import (
    CODEBOOK_SIZE,
    CODEC_EOS_ID,
    DECODER_GAIN,
    DECODER_MEAN_ABS,
    ENCODER_GAIN,
    EOS_CHANNEL_VALUE,
    GENERATION_CONFIG,
    IM_END_ID,
    IM_START_ID,
    MIMI_CODEBOOK_STD,
    NUM_CODE_GROUPS,
    QWEN2_SPLIT_PATTERN,
    SAMPLE_RATE,
    SHAPES,
    SPEAKER_ENCODER_KEYS,
    TEXT_SPECIAL_TOKENS,
    TTS_BOS_ID,
    TTS_EOS_ID,
    TTS_PAD_ID,
    speaker_encoder_config,
    speech_tokenizer_config,
    talker_config,
    text_vocab,
)

__all__ = ["build_tiny_model", "load_qwen3"]


def build_tiny_model(
    out_dir: Path,
    *,
    kind: Literal["custom_voice", "base"] = "custom_voice",
    seed: int = 0,
    eos_bias: float | None = None,
    model_size: Literal["0b6", "1b7"] = "1b7",
    shape: Literal["tiny", "0.6b", "1.7b"] = "tiny",
    dtype: Any = None,
) -> Path:
    """Write a tiny random Qwen3-TTS model folder to ``out_dir`` (created if needed) and return it.

    The same ``seed`` gives the same weights (the global torch RNG is left as it was).

    ``eos_bias`` adds roughly that much to the EOS logit on every step (see :func:`_apply_eos_bias`); the other
    code-0 logits of a random talker are all close to 0. Greedy decoding then stops as early as qwen_tts allows
    (2 sampled tokens = 2 frames) for a bias of 1 or more; with the default sampling (top-k 50, temperature 0.9)
    requests end after a random number of frames (measured: bias 3 → 5..16, bias 5 → 2..5). None leaves the talker
    purely random: it then practically never emits EOS, and max_new_tokens decides the length.
    ``model_size`` only sets ``tts_model_size``: qwen_tts drops ``instruct`` for "0b6" CustomVoice models.
    """
    if kind not in ("custom_voice", "base"):
        raise ValueError(f"kind must be 'custom_voice' or 'base', not {kind!r}")
    import_qwen_tts()
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = SHAPES[shape]
    talker = talker_config(kind)
    talker.update(sizes.get("talker", {}))
    talker["code_predictor_config"].update(sizes.get("predictor", {}))
    tokenizer_config = speech_tokenizer_config()
    tokenizer_config["decoder_config"].update(sizes.get("decoder", {}))
    encoder_config = speaker_encoder_config()
    encoder_config["enc_dim"] = talker["hidden_size"]
    config = Qwen3TTSConfig(
        talker_config=talker,
        speaker_encoder_config=encoder_config,
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size=model_size,
        tts_model_type=kind,
        im_start_token_id=IM_START_ID,
        im_end_token_id=IM_END_ID,
        tts_pad_token_id=TTS_PAD_ID,
        tts_bos_token_id=TTS_BOS_ID,
        tts_eos_token_id=TTS_EOS_ID,
    )
    st_config = Qwen3TTSTokenizerV2Config(**tokenizer_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3TTSForConditionalGeneration(config).eval()
        speech_tokenizer = Qwen3TTSTokenizerV2Model(st_config).eval()
        with torch.no_grad():
            _randomize_codec(speech_tokenizer)
            if eos_bias is not None:
                _apply_eos_bias(model, eos_bias)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out_dir, safe_serialization=True)
    _fix_config_json(out_dir / "config.json")
    (out_dir / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    _save_text_tokenizer(out_dir)
    st_dir = out_dir / "speech_tokenizer"
    speech_tokenizer.save_pretrained(st_dir, safe_serialization=True)
    _save_feature_extractor(st_dir)
    return out_dir


def _fix_config_json(path: Path) -> None:
    """save_pretrained dumps the speaker-encoder config with PretrainedConfig's generic keys, which its __init__
    (no **kwargs) then rejects on load: keep only its real keys."""
    data = json.loads(path.read_text())
    data["speaker_encoder_config"] = {k: data["speaker_encoder_config"][k] for k in SPEAKER_ENCODER_KEYS}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _init_gain(module: Any, gain: float) -> None:
    """Re-initialise every conv / linear weight in ``module`` as N(0, gain² / fan_in) (torch's fan_in), biases 0."""
    import torch
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.ConvTranspose1d | nn.Linear):
            weight = m.weight
            fan_in = weight.shape[1] * (weight.shape[2] if weight.dim() == 3 else 1)
            weight.normal_(0.0, gain / math.sqrt(fan_in))
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)


def _randomize_codec(speech_tokenizer: Any) -> None:
    """A freshly initialised codec has all-zero codebooks (silence out, code 0 for any input): fill them, and set
    the decoder's gains so that random codes decode to noise of mean |x| = DECODER_MEAN_ABS."""
    import torch

    decoder = speech_tokenizer.decoder
    _init_gain(decoder, DECODER_GAIN)
    for m in decoder.modules():
        if hasattr(m, "embedding_sum") and hasattr(m, "cluster_usage"):  # qwen_tts EuclideanCodebook
            m.embedding_sum.normal_(0.0, 1.0)
            m.cluster_usage.fill_(1.0)
    # The level compounds over ~30 random layers (0.75 gives 0.016..0.035 across seeds): rescale the last conv,
    # which is linear before the final clamp, using fixed random codes.
    last_conv = decoder.decoder[-1].conv
    codes = torch.randint(0, CODEBOOK_SIZE, (2, NUM_CODE_GROUPS, 25), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        level = float(decoder(codes).abs().mean())
        if level > 0:
            last_conv.weight.mul_(DECODER_MEAN_ABS / level)
    encoder = speech_tokenizer.encoder
    _init_gain(encoder, ENCODER_GAIN)
    for m in encoder.modules():
        if hasattr(m, "embed_sum") and hasattr(m, "cluster_usage"):  # transformers MimiEuclideanCodebook
            m.embed_sum.normal_(0.0, MIMI_CODEBOOK_STD)
            m.cluster_usage.fill_(1.0)
            if hasattr(m, "_embed"):
                m._embed = None  # cached embed_sum / cluster_usage


def _apply_eos_bias(model: Any, eos_bias: float) -> None:
    """Give the EOS logit an (approximately) constant offset of ``eos_bias``.

    ``codec_head`` has no bias, so the offset rides on a constant hidden channel: channel 0 of every codec
    embedding and of the text projection's output is set to ``EOS_CHANNEL_VALUE``, which dominates that channel
    of the residual stream, so after the final RMSNorm it is ≈ sqrt(hidden) on every step. Channel 0 of the
    codec_head rows is zeroed except for EOS, whose weight is ``eos_bias / sqrt(hidden)``.
    """
    talker = model.talker
    hidden = talker.config.hidden_size
    talker.model.codec_embedding.weight[:, 0] = EOS_CHANNEL_VALUE
    talker.text_projection.linear_fc2.bias[0] = EOS_CHANNEL_VALUE
    head = talker.codec_head.weight
    head[:, 0] = 0.0
    head[CODEC_EOS_ID, 0] = eos_bias / math.sqrt(hidden)


def _save_text_tokenizer(out_dir: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab, merges = text_vocab()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    specials = list(TEXT_SPECIAL_TOKENS)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer_class: Any = Qwen2TokenizerFast  # untyped constructor
    fast = tokenizer_class(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in specials if t not in ("<|endoftext|>", "<|im_end|>")],
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=131072,
    )
    fast.save_pretrained(out_dir)


def _save_feature_extractor(st_dir: Path) -> None:
    from transformers import EncodecFeatureExtractor

    EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0).save_pretrained(st_dir)
