"""The tiny random Qwen3-TTS folder loads and runs through qwen_tts's own API; the import shims behave."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chorus.models.qwen3.compat import INSTALL_HINT, missing_requirements

if missing := missing_requirements():
    pytest.skip(f"{', '.join(missing)} not installed ({INSTALL_HINT})", allow_module_level=True)

import torch
from safetensors.torch import load_file

from chorus.models.qwen3.compat import (
    STUB_MARKER,
    STUBBED_MODULES,
    import_qwen_tts,
    load_qwen3,
    mel_filterbank,
)
from chorus.testing import qwen3_tiny as tiny
from chorus.testing import qwen3_tiny_config as tiny_config

SR = tiny_config.SAMPLE_RATE
FRAME = tiny_config.SAMPLES_PER_FRAME
GREEDY: dict[str, Any] = {"do_sample": False, "subtalker_dosample": False}


def synthetic_voice(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato and a little noise, mono float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(150 + 15 * np.sin(2 * np.pi * 4 * t)) / sr
    audio = 0.2 * sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny-cv"), kind="custom_voice", seed=0)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny-base"), kind="base", seed=0)


@pytest.fixture(scope="module")
def cv(cv_dir: Path) -> Any:
    return load_qwen3(cv_dir)


@pytest.fixture(scope="module")
def base(base_dir: Path) -> Any:
    return load_qwen3(base_dir)


# --- compat --------------------------------------------------------------------------------------------------


def test_stubs_stand_in_only_for_missing_modules() -> None:
    import_qwen_tts()
    for name in STUBBED_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        try:
            importlib.metadata.distribution(name.partition(".")[0])
            installed = True
        except importlib.metadata.PackageNotFoundError:
            installed = False
        assert getattr(module, STUB_MARKER, False) is not installed, name
    assert not getattr(sys.modules["onnxruntime"], STUB_MARKER, False)  # chorus's own, never stubbed
    assert os.environ.get("HF_HUB_OFFLINE") and os.environ.get("TRANSFORMERS_OFFLINE")


def test_librosa_resamples_or_its_stand_in_refuses() -> None:
    """Without librosa (tests/models/qwen3/test_without_librosa.py runs this file so) the stand-in refuses to
    resample with a clear error; with it, the real one is in place and resamples."""
    import_qwen_tts()
    librosa = sys.modules["librosa"]
    tone = np.sin(np.arange(1600) / 5).astype(np.float32)
    if getattr(librosa, STUB_MARKER, False):
        with pytest.raises(RuntimeError, match="resample to 24 kHz"):
            librosa.resample(y=tone, orig_sr=16000, target_sr=24000)
    else:
        assert librosa.resample(y=tone, orig_sr=16000, target_sr=24000).size == 2400


def test_mel_filterbank_is_librosas_slaney_filterbank() -> None:
    from transformers.audio_utils import mel_filter_bank  # documented to match librosa

    ours = mel_filterbank(sr=24000, n_fft=1024, n_mels=128, fmin=0, fmax=12000)
    ref = mel_filter_bank(
        num_frequency_bins=513,
        num_mel_filters=128,
        min_frequency=0,
        max_frequency=12000,
        sampling_rate=24000,
        norm="slaney",
        mel_scale="slaney",
    ).T
    assert ours.shape == (128, 513) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    htk = mel_filterbank(sr=16000, n_fft=400, n_mels=80, htk=True, norm=None)
    ref_htk = mel_filter_bank(201, 80, 0, 8000, 16000, norm=None, mel_scale="htk").T
    np.testing.assert_allclose(htk, ref_htk, rtol=1e-5, atol=1e-7)


# --- the folder ----------------------------------------------------------------------------------------------


def test_build_is_deterministic(tmp_path: Path, cv_dir: Path) -> None:
    # (Its speed, ~0.3 s warm, is not asserted: a timing bound fails on a loaded machine, not on a slow build.)
    again = tiny.build_tiny_model(tmp_path / "again", kind="custom_voice", seed=0)
    other = tiny.build_tiny_model(tmp_path / "other", kind="custom_voice", seed=1)
    for rel in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        a, b, c = (load_file(d / rel) for d in (cv_dir, again, other))
        assert a.keys() == b.keys() == c.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)
    for rel in ("config.json", "tokenizer.json", "speech_tokenizer/config.json"):
        assert (cv_dir / rel).read_text() == (again / rel).read_text()


def test_folder_layout_and_config(cv_dir: Path, base_dir: Path) -> None:
    for d in (cv_dir, base_dir):
        for rel in (
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
            "merges.txt",
            "speech_tokenizer/config.json",
            "speech_tokenizer/model.safetensors",
            "speech_tokenizer/preprocessor_config.json",
        ):
            assert (d / rel).is_file(), rel
    config = json.loads((cv_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_tts" and config["tts_model_type"] == "custom_voice"
    talker = config["talker_config"]
    assert (talker["codec_pad_id"], talker["codec_bos_id"], talker["codec_eos_token_id"]) == (2148, 2149, 2150)
    assert talker["codec_language_id"]["english"] == 2050 and talker["codec_language_id"]["chinese"] == 2055
    assert sorted(talker["spk_id"]) == sorted(tiny_config.CUSTOM_VOICE_SPEAKERS)
    assert len(set(talker["spk_id"].values())) == 9 and all(2048 <= i < 3072 for i in talker["spk_id"].values())
    assert sorted(config["speaker_encoder_config"]) == sorted(tiny_config.SPEAKER_ENCODER_KEYS)
    assert json.loads((base_dir / "config.json").read_text())["speaker_encoder_config"]["enc_dim"] == 64
    generation = json.loads((cv_dir / "generation_config.json").read_text())
    assert generation == tiny_config.GENERATION_CONFIG
    codec = json.loads((cv_dir / "speech_tokenizer/config.json").read_text())
    assert codec["model_type"] == "qwen3_tts_tokenizer_12hz"
    assert codec["decode_upsample_rate"] == codec["encode_downsample_rate"] == FRAME


def test_processor_tokenizes_the_template(cv: Any) -> None:
    template = "<|im_start|>assistant\nHello world, this is a test.<|im_end|>\n<|im_start|>assistant\n"
    ids = cv.processor(text=template, return_tensors="pt")["input_ids"][0].tolist()
    tok = cv.processor.tokenizer
    assistant, newline = tok.convert_tokens_to_ids(["assistant", "Ċ"])
    assert ids[:3] == [tiny_config.IM_START_ID, assistant, newline]
    assert ids[-5:] == [tiny_config.IM_END_ID, newline, tiny_config.IM_START_ID, assistant, newline]
    assert tok.decode(ids[3:-5]) == "Hello world, this is a test."
    config = cv.model.config
    assert (config.im_start_token_id, config.im_end_token_id) == (tiny_config.IM_START_ID, tiny_config.IM_END_ID)
    specials = ["<tts_pad>", "<tts_text_bos>", "<tts_text_eod>"]
    assert tok.convert_tokens_to_ids(specials) == [
        tiny_config.TTS_PAD_ID,
        tiny_config.TTS_BOS_ID,
        tiny_config.TTS_EOS_ID,
    ]
    assert (config.tts_pad_token_id, config.tts_bos_token_id, config.tts_eos_token_id) == (
        tiny_config.TTS_PAD_ID,
        tiny_config.TTS_BOS_ID,
        tiny_config.TTS_EOS_ID,
    )
    assert max(tiny_config.TEXT_SPECIAL_IDS.values()) < tiny_config.TEXT_VOCAB_SIZE


# --- generation through qwen_tts -----------------------------------------------------------------------------


def test_custom_voice_round_trip(cv: Any) -> None:
    kwargs = {"text": "Hello world, this is a test.", "speaker": "ryan", "language": "English", "max_new_tokens": 20}
    wavs, sr = cv.generate_custom_voice(**kwargs, **GREEDY)
    assert sr == SR and len(wavs) == 1
    wav = wavs[0]
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert wav.size % FRAME == 0 and 0 < wav.size <= 19 * FRAME  # N sampled tokens → at most N - 1 frames
    assert np.abs(wav).mean() > 1e-3 and np.all(np.abs(wav) <= 1.0)
    again, _ = cv.generate_custom_voice(**kwargs, **GREEDY)
    np.testing.assert_array_equal(again[0], wav)


def test_custom_voice_dialect_speaker_and_instruct(cv: Any) -> None:
    wavs, _ = cv.generate_custom_voice(
        text="你好", speaker="Eric", language="Chinese", instruct="Speak slowly.", max_new_tokens=4, **GREEDY
    )
    assert wavs[0].size % FRAME == 0 and wavs[0].size > 0
    with pytest.raises(ValueError, match="Unsupported speakers"):
        cv.generate_custom_voice(text="Hi", speaker="nobody", language="English", max_new_tokens=4)


def test_voice_clone_from_a_synthetic_reference(base: Any) -> None:
    ref = synthetic_voice()
    (item,) = base.create_voice_clone_prompt(ref_audio=(ref, SR), ref_text="Hello world.", x_vector_only_mode=False)
    assert item.icl_mode and not item.x_vector_only_mode
    assert tuple(item.ref_code.shape) == (-(-ref.size // FRAME), tiny_config.NUM_CODE_GROUPS)
    assert item.ref_code.any() and len(set(item.ref_code[:, 0].tolist())) > 1  # not code 0 for everything
    assert tuple(item.ref_spk_embedding.shape) == (64,) and torch.isfinite(item.ref_spk_embedding).all()
    assert item.ref_spk_embedding.abs().sum() > 0

    wavs, sr = base.generate_voice_clone(
        text="This is a test.", language="English", voice_clone_prompt=[item], max_new_tokens=12, **GREEDY
    )
    assert sr == SR and 0 < wavs[0].size <= 11 * FRAME + 1  # the reference part is cut off proportionally
    assert np.abs(wavs[0]).mean() > 1e-3

    (xvec,) = base.create_voice_clone_prompt(ref_audio=(ref, SR), x_vector_only_mode=True)
    assert xvec.ref_code is None and torch.equal(xvec.ref_spk_embedding, item.ref_spk_embedding)
    wavs, _ = base.generate_voice_clone(text="Hi.", language="Auto", voice_clone_prompt=[xvec], max_new_tokens=6)
    assert wavs[0].size % FRAME == 0 and wavs[0].size > 0


def test_reference_audio_off_24khz_needs_librosa(base: Any) -> None:
    """qwen_tts resamples a reference that is not at 24 kHz with librosa: the stand-in refuses (chorus resamples
    before it hands audio over), the real one resamples."""
    ref = (synthetic_voice(sr=16000), 16000)
    if getattr(sys.modules["librosa"], STUB_MARKER, False):
        with pytest.raises(RuntimeError, match=r"librosa\.resample is not available"):
            base.create_voice_clone_prompt(ref_audio=ref, x_vector_only_mode=True)
    else:
        (item,) = base.create_voice_clone_prompt(ref_audio=ref, x_vector_only_mode=True)
        assert item.ref_spk_embedding is not None


def test_eos_bias_makes_the_talker_stop(tmp_path: Path, cv: Any) -> None:
    kwargs = {"text": "Hello world.", "speaker": "vivian", "language": "English", "max_new_tokens": 12}
    plain, _ = cv.generate_custom_voice(**kwargs, **GREEDY)
    assert plain[0].size == 11 * FRAME  # never stops by itself: the cap decides

    stopping = load_qwen3(tiny.build_tiny_model(tmp_path / "eos", kind="custom_voice", seed=0, eos_bias=5.0))
    wavs, _ = stopping.generate_custom_voice(**kwargs, **GREEDY)
    assert wavs[0].size == 2 * FRAME  # EOS as soon as qwen_tts allows it (min_new_tokens=2)
    torch.manual_seed(0)
    wavs, _ = stopping.generate_custom_voice(**kwargs)  # sampling: stops early, at a random point
    assert 0 < wavs[0].size < 11 * FRAME
