"""A Piper (VITS) ONNX voice split in two: an encoder and a windowed decoder.

Piper's graph is text encoder → duration predictor → flow → HiFi-GAN decoder. The decoder is a stack of
convolutions over latent frames (256 samples each), so a window of frames decoded with as many frames of
context on each side as the decoder's receptive field (``context_frames``: 12 for the bundled voice, whose
field is 11.08 frames) gives the same samples as decoding the whole sentence (max difference 2e-6).
Splitting the graph turns one sentence-sized lump of work into a cheap encoder call plus decoder windows that
stream and interleave with other requests.
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

from chorus.models.piper_layout import context_frames, decoder_as_2d, receptive_field_frames
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


def _session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    # One intra-op thread per run: parallelism comes from running slots on several threads at once,
    # which beat one run with two threads on 2 cores (see the note on issue #3). Other session options
    # (optimisation levels, arena, memory pattern, denormals, spinning) measured no different (issue #9).
    # ORT's own memory arena stays on: without it glibc's per-thread heaps fragmented (+65 MB of RSS per 1,500
    # requests), and trimming them (malloc_trim) took 65-85 ms with the heap locked, long enough to make live
    # streams run dry (issue #11's note).
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class PiperGraph:
    """The encoder and decoder sessions of one Piper voice, plus its config."""

    config: dict[str, Any]
    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    latent_name: str
    has_speaker_input: bool
    latent_channels: int
    # Latent frames of context a decoder window needs on each side to equal the whole-segment decode (from the
    # decoder's receptive field, piper_layout.receptive_field_frames: 12 for the bundled voice).
    context_frames: int = 16

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.config.get("hop_length", 256))

    @classmethod
    def load(
        cls,
        model_path: Path,
        config_path: Path | None = None,
        *,
        quantization: str = "none",
        cache_dir: Path | None = None,
    ) -> PiperGraph:
        """``quantization``: "none", or "int8" for an int8 decoder (chorus.models.piper_quant; it failed the
        quality gate on the bundled voice), quantised at load or taken from ``cache_dir`` (default
        ``$XDG_CACHE_HOME/chorus``)."""
        if quantization not in ("none", "int8"):
            raise ValueError(f"model.quantization {quantization!r}: Piper voices take none or int8")
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
        context = context_frames(receptive_field_frames(decoder))
        # Same arithmetic on ORT's faster 2-D convolution path (piper_layout).
        decoder = decoder_as_2d(decoder)
        channels = next(init.dims[1] for init in model.graph.initializer if init.name == _DECODER_ENTRY)
        graph = cls(config, _session(encoder), _session(decoder), latent, has_sid, int(channels), context)
        if quantization == "int8":
            from chorus.models.piper_quant import int8_decoder

            log.warning(
                "model.quantization int8 failed chorus's audio-quality gate on the bundled Piper voice (mean MCD "
                "3.6 dB, WER +9 points; README); check a voice with `chorus bench-quality` before serving it"
            )
            graph.decoder = _session(int8_decoder(graph, decoder, Path(model_path), cache_dir))
        return graph

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
