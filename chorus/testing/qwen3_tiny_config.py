"""Configs of the tiny random Qwen3-TTS test model (and of the real checkpoint shapes for benchmarks)."""

from __future__ import annotations

from typing import Any

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920
NUM_CODE_GROUPS = 16
CODEBOOK_SIZE = 2048
CODEC_VOCAB_SIZE = 3072
TEXT_VOCAB_SIZE = 1024

CODEC_PAD_ID = 2148
CODEC_BOS_ID = 2149
CODEC_EOS_ID = 2150
CODEC_THINK_ID = 2154
CODEC_NOTHINK_ID = 2155
CODEC_THINK_BOS_ID = 2156
CODEC_THINK_EOS_ID = 2157
# Language ids as in the released configs (as quoted by third parties; the official repo ships no config.json).
LANGUAGE_IDS = {
    "english": 2050,
    "german": 2053,
    "spanish": 2054,
    "chinese": 2055,
    "japanese": 2058,
    "french": 2061,
    "sichuan_dialect": 2062,
    "korean": 2064,
    "russian": 2069,
    "italian": 2070,
    "portuguese": 2071,
    "beijing_dialect": 2074,
}
CUSTOM_VOICE_SPEAKERS = ("aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian")
SPEAKER_IDS = {name: 3000 + i for i, name in enumerate(CUSTOM_VOICE_SPEAKERS)}
SPEAKER_DIALECTS: dict[str, str | bool] = {name: False for name in CUSTOM_VOICE_SPEAKERS} | {
    "dylan": "beijing_dialect",
    "eric": "sichuan_dialect",
}

# Whole-word BPE merges, so that the template's "assistant" / "user" / "system" are one token each like in Qwen's
# vocab (the prompt builder slices the template by token position), plus a few common words. "Ġ" is a space.
MERGED_WORDS = (
    "assistant",
    "user",
    "system",
    "Ġthe",
    "Ġand",
    "Ġof",
    "Ġto",
    "Ġin",
    "Ġis",
    "Ġit",
    "Ġyou",
    "Ġthat",
    "Ġthis",
    "Ġwith",
    "Ġfor",
    "Hello",
    "Ġhello",
    "Ġworld",
    "The",
    "ing",
    "ed",
)
# Special text tokens, numbered right after the regular vocab as in Qwen's (151643 = <|endoftext|>, ...).
TEXT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def text_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny byte-level BPE: 256 byte tokens, merge chains spelling MERGED_WORDS, then TEXT_SPECIAL_TOKENS."""
    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    for word in MERGED_WORDS:
        for i in range(1, len(word)):
            left, right = word[:i], word[i]
            if word[: i + 1] not in vocab:
                merges.append((left, right))
                vocab[word[: i + 1]] = len(vocab)
    for token in TEXT_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return vocab, merges


TEXT_SPECIAL_IDS = {token: text_vocab()[0][token] for token in TEXT_SPECIAL_TOKENS}
IM_START_ID = TEXT_SPECIAL_IDS["<|im_start|>"]
IM_END_ID = TEXT_SPECIAL_IDS["<|im_end|>"]
TTS_PAD_ID = TEXT_SPECIAL_IDS["<tts_pad>"]
TTS_BOS_ID = TEXT_SPECIAL_IDS["<tts_text_bos>"]
TTS_EOS_ID = TEXT_SPECIAL_IDS["<tts_text_eod>"]

# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2/Qwen3 models).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

GENERATION_CONFIG = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}
SPEAKER_ENCODER_KEYS = (
    "mel_dim",
    "enc_dim",
    "enc_channels",
    "enc_kernel_sizes",
    "enc_dilations",
    "enc_attention_channels",
    "enc_res2net_scale",
    "enc_se_channels",
    "sample_rate",
)

TALKER_HIDDEN = 64
DECODER_GAIN = 0.75  # codec decoder weights: std = gain / sqrt(fan_in); louder gains clip, quieter ones vanish
DECODER_MEAN_ABS = 0.05  # then scaled so that random codes give this mean |x| (real speech: a few hundredths)
ENCODER_GAIN = 1.0
MIMI_CODEBOOK_STD = 0.01  # small next to the encoder's features: codes follow the input instead of the norms
EOS_CHANNEL_VALUE = 1.0  # see _apply_eos_bias


def talker_config(kind: str) -> dict[str, Any]:
    return {
        "vocab_size": CODEC_VOCAB_SIZE,
        "hidden_size": TALKER_HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000,
        # head_dim 16 → 8 rotary frequencies (the real 128 uses [24, 20, 20]); the 3 streams are identical anyway.
        "rope_scaling": {"mrope_section": [4, 2, 2], "interleaved": True, "rope_type": "default"},
        "attention_bias": False,
        "use_sliding_window": False,
        "num_code_groups": NUM_CODE_GROUPS,
        "text_hidden_size": 32,
        "text_vocab_size": TEXT_VOCAB_SIZE,
        "codec_eos_token_id": CODEC_EOS_ID,
        "codec_think_id": CODEC_THINK_ID,
        "codec_nothink_id": CODEC_NOTHINK_ID,
        "codec_think_bos_id": CODEC_THINK_BOS_ID,
        "codec_think_eos_id": CODEC_THINK_EOS_ID,
        "codec_pad_id": CODEC_PAD_ID,
        "codec_bos_id": CODEC_BOS_ID,
        "codec_language_id": dict(LANGUAGE_IDS),
        "spk_id": dict(SPEAKER_IDS) if kind == "custom_voice" else {},
        "spk_is_dialect": dict(SPEAKER_DIALECTS) if kind == "custom_voice" else {},
        "code_predictor_config": {
            "vocab_size": CODEBOOK_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 65536,
            "initializer_range": 0.02,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000,
            "num_code_groups": NUM_CODE_GROUPS,
        },
    }


def speaker_encoder_config() -> dict[str, Any]:
    return {
        "mel_dim": 128,  # fixed: extract_speaker_embedding always computes 128 mel bins
        "enc_dim": TALKER_HIDDEN,  # the x-vector takes a codec-embedding slot, so it has the talker's width
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 16,
        "enc_res2net_scale": 4,
        "enc_se_channels": 16,
        "sample_rate": SAMPLE_RATE,
    }


def speech_tokenizer_config() -> dict[str, Any]:
    return {
        "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": SAMPLE_RATE,
        "decode_upsample_rate": SAMPLES_PER_FRAME,
        "encode_downsample_rate": SAMPLES_PER_FRAME,
        "decoder_config": {
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 64,
            "hidden_size": 32,
            "latent_dim": 32,
            "max_position_embeddings": 8000,
            "rope_theta": 10000,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "attention_bias": False,
            "sliding_window": 72,
            "intermediate_size": 64,
            "hidden_act": "silu",
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
            "num_hidden_layers": 1,
            "num_quantizers": NUM_CODE_GROUPS,
            "upsample_rates": [8, 5, 4, 3],  # x upsampling_ratios [2, 2] = 1920 samples per frame
            "upsampling_ratios": [2, 2],
            "decoder_dim": 64,
            "attention_dropout": 0.0,
        },
        "encoder_config": {  # transformers.MimiConfig: 24 kHz, 960x conv downsampling, then 2x → 12.5 Hz
            "sampling_rate": SAMPLE_RATE,
            "frame_rate": 12.5,
            "audio_channels": 1,
            "hidden_size": 32,
            "num_filters": 4,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "pad_mode": "constant",
            "compress": 2,
            "trim_right_ratio": 1.0,
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 16,
            "num_quantizers": NUM_CODE_GROUPS,
            "use_conv_shortcut": False,
            "vector_quantization_hidden_dimension": 16,
            "num_semantic_quantizers": 1,
            "upsample_groups": 32,
            "num_hidden_layers": 1,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "gelu",
            "max_position_embeddings": 8000,
            "initializer_range": 0.02,
            "norm_eps": 1e-5,
            "use_cache": False,
            "rope_theta": 10000.0,
            "sliding_window": 250,
            "attention_dropout": 0.0,
            "layer_scale_initial_scale": 0.01,
            "attention_bias": False,
        },
    }


# Real shapes of the public checkpoints (Qwen3-TTS-12Hz-1.7B / -0.6B config.json as quoted by public ports of
# the model; see bench/README.md): same FLOPs per frame as the real models, random weights. The text vocabulary
# stays the tiny one (an embedding lookup; it does not change the per-step cost).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "0.6b": {
        "talker": {
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "text_hidden_size": 2048,
            "rope_scaling": {"mrope_section": [24, 20, 20], "interleaved": True, "rope_type": "default"},
        },
        "predictor": {
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 5,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
        },
        "decoder": {
            "codebook_dim": 512,
            "latent_dim": 1024,
            "hidden_size": 512,
            "num_hidden_layers": 8,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 64,
            "intermediate_size": 1024,
            "decoder_dim": 1536,
        },
    },
}
SHAPES["1.7b"] = {
    **SHAPES["0.6b"],
    "talker": {**SHAPES["0.6b"]["talker"], "hidden_size": 2048, "intermediate_size": 6144},
}
