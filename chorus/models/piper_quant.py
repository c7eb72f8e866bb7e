"""An int8 HiFi-GAN decoder for a Piper voice (``model.quantization: int8``), calibrated on the voice's own speech.

Recipe: ONNX Runtime static quantisation in QDQ form of every ``Conv`` (which the CPU provider fuses into
``QLinearConv``): weights int8 per output channel, activations uint8 per tensor, ranges by min/max over
calibration windows; the ``ConvTranspose`` upsamplers, adds and activations stay float (quantising them too
saved ≤ 6 % more and distorted more: MCD 4.0 vs 3.6 dB on development sentences). Calibration: the latents
of ``CALIBRATION_TEXT`` (none of the quality gate's sentences) encoded by this voice with noise scales 0, cut
into windows of ``CALIBRATION_WINDOW_FRAMES`` as the decoder sees them: the same voice file gives the same
int8 model, on this machine and ORT version. Quantising takes ~4-5 s; the result is cached under the cache
directory, keyed by the voice file's digest, the float decoder's graph, the recipe and the ORT version.

The encoder stays float: it carries the durations and the noise.

Quality: this recipe FAILS chorus's audio-quality gate on the bundled voice (``chorus bench-quality``, 50
held-out sentences; README): mean MCD 3.58 dB against a bound of 1.0 (two noise seeds of the float voice differ
by 2.06), speaker similarity 0.960 mean / 0.913 min, WER +9.0 points. It saves 27 % of the backend's compute
(0.043 → 0.031 core-s per audio-s on one thread). Quantising only the first upsampling stage's resblocks passes
the gate (MCD 0.49) but saves ~7 %, no more than the lossless context cut; stages 1-2 fail (MCD 1.21, -15 %).
It stays available so that the gate can measure it; it is not a recommended setting.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

if TYPE_CHECKING:
    from chorus.models.piper_graph import PiperGraph

log = logging.getLogger(__name__)

RECIPE = "qdq-conv-u8act-s8w-per-channel-minmax-v1"
CALIBRATION_WINDOW_FRAMES = 96
# Harvard sentences (IEEE 1969), lists 1-2: phonetically balanced, and not in the quality gate's set.
CALIBRATION_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It's easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch. "
    "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. "
    "Four hours of steady work faced us. A large size in stockings is hard to sell. "
    "The boy was there when the sun rose. A rod is used to catch pink salmon. "
    "The source of the huge river is the clear spring. Kick the ball straight and follow through. "
    "Help the woman get back to her feet. A pot of tea helps to pass the evening. "
    "Smoky fires lack flame and heat. The soft cushion broke the man's fall. "
    "The salt breeze came across from the sea. The girl at the booth sold fifty bonds."
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chorus"


def int8_decoder(graph: PiperGraph, decoder: onnx.ModelProto, voice_path: Path, cache_dir: Path | None) -> bytes:
    """The int8 form of ``decoder`` (serialized), from the cache or quantised now and cached."""
    key = _cache_key(voice_path, decoder)
    path = Path(cache_dir or default_cache_dir()) / f"piper-int8-{key}.onnx"
    if path.is_file():
        log.info("int8 Piper decoder from %s", path)
        return path.read_bytes()
    log.info("quantising the Piper decoder to int8 (calibrating on the voice's own speech) ...")
    data = quantize_decoder(decoder, calibration_windows(graph))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)  # atomic: a concurrent loader sees no half-written model
    except OSError as e:  # a read-only cache costs the next start the same few seconds, nothing else
        log.warning("cannot cache the int8 Piper decoder at %s: %s", path, e)
    return data


def calibration_windows(graph: PiperGraph) -> list[np.ndarray]:
    """Latent windows [1, C, CALIBRATION_WINDOW_FRAMES] of ``CALIBRATION_TEXT`` spoken by this voice."""
    from piper import PiperVoice
    from piper.config import PiperConfig

    from chorus.models.piper_noise import SegmentNoise

    voice = PiperVoice(session=graph.encoder, config=PiperConfig.from_dict(graph.config))
    length_scale = float(graph.config.get("inference", {}).get("length_scale", 1.0))
    scales = np.asarray([0.0, length_scale, 0.0], dtype=np.float32)  # no noise: the same latents every time
    noise = SegmentNoise(0, graph.latent_channels)
    size = CALIBRATION_WINDOW_FRAMES
    windows: list[np.ndarray] = []
    for index, sentence in enumerate(voice.phonemize(CALIBRATION_TEXT)):
        if sentence:
            latent, _ = graph.encode(voice.phonemes_to_ids(sentence), scales, None, noise, index)
            windows += [latent[:, :, start : start + size] for start in range(0, latent.shape[2] - size + 1, size)]
    if not windows:
        raise ValueError("the calibration text gave no decoder windows")
    return windows


def quantize_decoder(decoder: onnx.ModelProto, windows: list[np.ndarray]) -> bytes:
    """``decoder`` with QDQ int8 convolutions (see the module docstring), calibrated on ``windows``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    latent_name = decoder.graph.input[0].name

    class Windows(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self._feeds: Iterator[np.ndarray] = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            window = next(self._feeds, None)
            return None if window is None else {latent_name: np.ascontiguousarray(window, dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="chorus-quant-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # Shape inference (and the metadata quantize_static looks for); no graph optimisation: the model is
        # quantised as the session will see it.
        quant_pre_process(decoder, prepared, skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            quantized,
            Windows(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return quantized.read_bytes()


def _cache_key(voice_path: Path, decoder: onnx.ModelProto) -> str:
    """The voice file's digest (its encoder makes the calibration latents), the float decoder as it will be
    quantised (so a change of its layout is a new key), the recipe and the ORT version."""
    h = hashlib.sha256()
    with voice_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(hashlib.sha256(decoder.SerializeToString()).digest())
    h.update(f"|{RECIPE}|{CALIBRATION_WINDOW_FRAMES}|{CALIBRATION_TEXT}|ort {ort.__version__}".encode())
    return h.hexdigest()[:24]
