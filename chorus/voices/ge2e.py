"""resemblyzer's GE2E speaker encoder without torch: the same front end in numpy, the network in onnxruntime.

The weights ship in the package (data/ge2e.onnx, exported by scripts/export_ge2e.py; Apache-2.0, see
data/NOTICE), so every install can embed speakers — voice registration works in the base install, no torch.
Each step mirrors resemblyzer 0.1.4 (``preprocess_wav`` then ``VoiceEncoder.embed_utterance``): 16 kHz audio
raised to -30 dBFS, long silences cut with WebRTC's VAD, a power mel spectrogram as librosa computes it (25 ms
Hann window, 10 ms hop, 40 Slaney mel bands, centred frames with zero padding), 160-frame partial utterances
at 1.3 per second, the mean of their embeddings normalised. Tests check it against resemblyzer itself.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from chorus.audio.resample import resample

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
NORMALISE_DBFS = -30  # an int, as in resemblyzer: the arithmetic stays float32
INT16_MAX = 2**15 - 1
VAD_WINDOW = 480  # 30 ms at 16 kHz
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6
EMBEDDING_DIM = 256


class Ge2eOnnx:
    """Speaker embeddings: (256,) float32, unit length. Thread-safe: onnxruntime sessions may run concurrently,
    and everything else here is per-call state (the VAD object included)."""

    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Short clips through a small LSTM: more threads cost more than they save (like torch, measured).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model = resources.files("chorus.voices.data").joinpath("ge2e.onnx").read_bytes()
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def embed(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Mono float audio at any rate → (256,) float32, L2-normalised; ValueError for unusable audio.

        What chorus's SpeakerEncoder.embed computed with resemblyzer: resampled to 16 kHz (soxr) and clipped to
        [-1, 1], then ``preprocess_wav`` and ``embed_utterance``. One addition, kept from SpeakerEncoder: when the
        VAD keeps less than 0.5 s (odd or synthetic audio), the whole clip is embedded rather than a scrap.
        """
        if sample_rate <= 0:
            raise ValueError(f"the sample rate must be positive, got {sample_rate}")
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"expected non-empty mono audio (1-D), got shape {wav.shape}")
        if not np.all(np.isfinite(wav)):
            raise ValueError("the audio contains NaN or infinite samples")
        if sample_rate != SAMPLE_RATE:
            wav = resample(wav, sample_rate, SAMPLE_RATE)
        wav = np.clip(wav, -1.0, 1.0)
        if wav.size == 0:
            raise ValueError("the audio is too short to embed")
        if not np.any(wav):
            raise ValueError("the audio is silent")
        wav = normalise_volume(wav)
        voiced = trim_long_silences(wav)
        if voiced.size >= SAMPLE_RATE // 2:
            wav = voiced
        return self.embed_utterance(wav)

    def embed_utterance(self, wav: np.ndarray) -> np.ndarray:
        """resemblyzer's ``VoiceEncoder.embed_utterance`` for preprocessed 16 kHz audio: the normalised mean of
        the embeddings of 160-frame partials (1.3 per second, the last one zero-padded if it covers 75 %)."""
        wav = np.asarray(wav, dtype=np.float32)
        starts = partial_starts(wav.size)
        stop = (starts[-1] + PARTIAL_FRAMES) * HOP
        if stop >= wav.size:  # the last partial reaches past the audio: zeros, before the spectrogram
            wav = np.pad(wav, (0, stop - wav.size))
        mel = mel_spectrogram(wav)
        partials = np.ascontiguousarray(np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts]))
        embeddings = np.asarray(self._session.run(None, {"mels": partials})[0], np.float32)
        mean = embeddings.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if mean.shape != (EMBEDDING_DIM,) or not np.isfinite(norm) or norm == 0.0:
            raise ValueError("the speaker encoder produced no usable embedding for this audio")
        embedding: np.ndarray = (mean / np.float32(norm)).astype(np.float32)
        return embedding


def normalise_volume(wav: np.ndarray) -> np.ndarray:
    """Raise (never lower) the level to -30 dBFS RMS, as resemblyzer's ``normalize_volume(increase_only=True)``,
    with its very expressions (so its float32 rounding too: the VAD sees bit-identical 16-bit samples)."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    if not rms > 0:
        raise ValueError("the audio is silent")
    wave_dbfs = 20 * np.log10(rms / INT16_MAX)
    change_db = NORMALISE_DBFS - wave_dbfs
    if change_db < 0:
        return wav
    normalised: np.ndarray = wav * (10 ** (change_db / 20))
    return normalised


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Drop pauses longer than ~200 ms (WebRTC VAD, aggressiveness 3, smoothed and dilated like resemblyzer)."""
    import webrtcvad

    wav = wav[: wav.size - wav.size % VAD_WINDOW]
    if wav.size == 0:
        return wav
    # as resemblyzer: samples above full scale (after raising the volume) wrap around in the int16 cast
    pcm = np.round(wav * INT16_MAX).astype("<i2").tobytes()
    vad = webrtcvad.Vad(3)
    step = 2 * VAD_WINDOW
    flags = np.array([vad.is_speech(pcm[i : i + step], SAMPLE_RATE) for i in range(0, len(pcm), step)], float)
    padded = np.concatenate([np.zeros((VAD_AVERAGE_WIDTH - 1) // 2), flags, np.zeros(VAD_AVERAGE_WIDTH // 2)])
    sums = np.cumsum(padded)
    sums[VAD_AVERAGE_WIDTH:] = sums[VAD_AVERAGE_WIDTH:] - sums[:-VAD_AVERAGE_WIDTH]
    mask = np.round(sums[VAD_AVERAGE_WIDTH - 1 :] / VAD_AVERAGE_WIDTH).astype(bool)
    # binary dilation with a structure of VAD_MAX_SILENCE + 1 ones (scipy's, centred)
    width = VAD_MAX_SILENCE + 1
    left = width // 2
    padded_mask = np.concatenate([np.zeros(left, bool), mask, np.zeros(width - 1 - left, bool)])
    dilated = np.lib.stride_tricks.sliding_window_view(padded_mask, width).any(axis=1)
    return wav[np.repeat(dilated, VAD_WINDOW)]


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """[frames, 40] power mel spectrogram, as ``librosa.feature.melspectrogram(sr=16000, n_fft=400, hop=160,
    n_mels=40)`` (centred frames, zero padding, periodic Hann window, Slaney mel filters)."""
    padded = np.pad(wav.astype(np.float32), N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
    mel: np.ndarray = (spectrum @ _mel_filters().T).astype(np.float32)
    return mel


def partial_starts(num_samples: int) -> list[int]:
    """First mel frame of each 160-frame partial, as resemblyzer's ``compute_partial_slices``."""
    samples_per_frame = HOP
    n_frames = int(np.ceil((num_samples + 1) / samples_per_frame))
    frame_step = int(np.round((SAMPLE_RATE / PARTIALS_PER_SECOND) / samples_per_frame))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
    # The last partial must cover enough of the audio, or it is dropped (unless it is the only one).
    coverage = (num_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


@functools.cache
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)


@functools.cache
def _mel_filters() -> np.ndarray:
    """[40, 201] Slaney-scale triangular filters with Slaney area normalisation (librosa.filters.mel)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2)
    hz_points = _mel_to_hz(mel_points)
    fdiff = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = f_sp * mel
    log = min_log_hz * np.exp(logstep * (mel - min_log_mel))
    return np.where(mel >= min_log_mel, log, linear)
