"""A Piper (VITS) ONNX voice split in two: an encoder and a windowed decoder.

Piper's graph is text encoder → duration predictor → flow → HiFi-GAN decoder. The decoder is a stack of
convolutions over latent frames (256 samples each), so a window of frames decoded with ~16 frames of
context on each side gives the same samples as decoding the whole sentence (measured: max difference
5e-7 at 16 frames). Splitting the graph turns one sentence-sized lump of work into a cheap encoder call
plus decoder windows that stream and interleave with other requests.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from chorus.models.piper_noise import (
    DURATION_NOISE,
    FRAMES_PER_ID_GUESS,
    NOISE_BLOCK_FRAMES,
    PRIOR_NOISE,
    SegmentNoise,
    expose_noise,
)

log = logging.getLogger(__name__)

_DECODER_ENTRY = "dec.conv_pre.weight"
# No segment (≤ 160 phonemes, speed ≥ 0.25) comes near this many frames; past it the error is real.
MAX_NOISE_FRAMES = 1 << 20
# A run retried with more noise frames is expected, not an error worth ORT's log line.
_QUIET = ort.RunOptions()
_QUIET.log_severity_level = 4


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    # One intra-op thread per run: parallelism comes from running slots on several threads at once,
    # which beat one run with two threads on 2 cores (see the note on issue #3).
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class PiperGraph:
    """The encoder and decoder sessions of one Piper voice, plus its config."""

    config: dict[str, Any]
    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    latent_name: str
    has_speaker_input: bool
    latent_channels: int

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.config.get("hop_length", 256))

    @classmethod
    def load(cls, model_path: Path, config_path: Path | None = None, *, quantization: str = "none") -> PiperGraph:
        config_path = config_path or Path(f"{model_path}.json")
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        model = onnx.load(str(model_path))
        latent = _decoder_input(model)
        durations = _duration_tensor(model)
        inputs = [i.name for i in model.graph.input]
        has_sid = "sid" in inputs
        extractor = Extractor(model)
        # The encoder's noise comes in as inputs (piper_noise): a request's seed then fixes its audio.
        encoder = expose_noise(extractor.extract_model(inputs, [latent, durations]))
        decoder_inputs = [latent, "sid"] if has_sid else [latent]
        decoder = extractor.extract_model(decoder_inputs, [model.graph.output[0].name])
        if quantization != "none":
            raise ValueError(f"model.quantization {quantization!r} is not available for Piper voices yet")
        channels = next(init.dims[1] for init in model.graph.initializer if init.name == _DECODER_ENTRY)
        return cls(config, _session(encoder), _session(decoder), latent, has_sid, int(channels))

    def encode(
        self,
        phoneme_ids: list[int],
        scales: np.ndarray,
        speaker_id: int | None,
        noise: SegmentNoise,
        segment: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Phoneme ids → (latent [1, C, T] with T = frames, frames per phoneme id [N]), with the noise of
        ``noise`` for segment ``segment`` (so the same seed and segment give the same latent)."""
        num_ids = len(phoneme_ids)
        feeds: dict[str, np.ndarray] = {
            "input": np.asarray([phoneme_ids], dtype=np.int64),
            "input_lengths": np.asarray([num_ids], dtype=np.int64),
            "scales": scales,
            DURATION_NOISE: noise.duration(segment, num_ids),
        }
        if self.has_speaker_input:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        length_scale = max(1.0, float(scales[1]))
        bound = int(FRAMES_PER_ID_GUESS * num_ids * length_scale) + NOISE_BLOCK_FRAMES
        while True:
            feeds[PRIOR_NOISE] = noise.prior(segment, bound)
            try:
                latent, durations = self.encoder.run(None, feeds, _QUIET)
                break
            except (Fail, RuntimeException, InvalidArgument):
                # The segment has more frames than the noise given: only a guess, retried with more room.
                if bound > MAX_NOISE_FRAMES:
                    raise
                bound *= 4
        return latent, np.asarray(durations, dtype=np.float64).reshape(-1).astype(np.int64)

    def decode(self, latent_window: np.ndarray, speaker_id: int | None) -> np.ndarray:
        """Latent frames [1, C, W] → float32 audio [W * hop_length]."""
        feeds: dict[str, np.ndarray] = {self.latent_name: np.ascontiguousarray(latent_window)}
        if self.has_speaker_input:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        (audio,) = self.decoder.run(None, feeds)
        return np.asarray(audio, dtype=np.float32).reshape(-1)


def _decoder_input(model: onnx.ModelProto) -> str:
    for node in model.graph.node:
        if node.op_type == "Conv" and _DECODER_ENTRY in node.input:
            return str(node.input[0])
    raise ValueError("not a Piper/VITS voice: no HiFi-GAN decoder entry (dec.conv_pre) in the graph")


def _duration_tensor(model: onnx.ModelProto) -> str:
    # Piper's per-phoneme frame counts come out of the graph's single Ceil (see piper.patch_voice_with_alignment).
    outputs = [out for node in model.graph.node if node.op_type == "Ceil" for out in node.output]
    if len(outputs) != 1:
        raise ValueError(f"expected one Ceil (phoneme durations) in the Piper graph, found {len(outputs)}")
    return str(outputs[0])
