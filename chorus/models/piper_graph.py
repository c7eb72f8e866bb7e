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

log = logging.getLogger(__name__)

_DECODER_ENTRY = "dec.conv_pre.weight"


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

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.config.get("hop_length", 256))

    @classmethod
    def load(cls, model_path: Path, config_path: Path | None = None) -> PiperGraph:
        config_path = config_path or Path(f"{model_path}.json")
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        model = onnx.load(str(model_path))
        latent = _decoder_input(model)
        durations = _duration_tensor(model)
        inputs = [i.name for i in model.graph.input]
        has_sid = "sid" in inputs
        extractor = Extractor(model)
        encoder = extractor.extract_model(inputs, [latent, durations])
        decoder_inputs = [latent, "sid"] if has_sid else [latent]
        decoder = extractor.extract_model(decoder_inputs, [model.graph.output[0].name])
        return cls(config, _session(encoder), _session(decoder), latent, has_sid)

    def encode(
        self, phoneme_ids: list[int], scales: np.ndarray, speaker_id: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Phoneme ids → (latent [1, C, T] with T = frames, frames per phoneme id [N])."""
        feeds: dict[str, np.ndarray] = {
            "input": np.asarray([phoneme_ids], dtype=np.int64),
            "input_lengths": np.asarray([len(phoneme_ids)], dtype=np.int64),
            "scales": scales,
        }
        if self.has_speaker_input:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        latent, durations = self.encoder.run(None, feeds)
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
