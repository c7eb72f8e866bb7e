"""Classical voice conversion with WORLD: the base voice's speech, re-synthesised as another speaker.

Piper has one speaker; a cloned voice is Piper's audio converted towards the reference speaker. Each frame is
analysed with WORLD (dio + stonemask F0, cheaptrick envelope, d4c aperiodicity), its F0 moved by a log-F0
mean/variance mapping, its spectral envelope mapped to the target speaker, and it is re-synthesised.

Envelope mapping, on WORLD's coded envelope (a mel-cepstrum) without its energy term c0:

* ``parallel`` (the reference's transcript is known, so the base voice can say the same words): source and
  target frames are paired by DTW, re-aligned after each fit, and a joint-density GMM gives an MMSE regression
  (a mixture of affine maps), followed by a global-variance scaling (MMSE over-smooths: it pulls every frame
  towards the mean, which sounds muffled and less like anyone; measured, GV is worth +0.08 similarity).
* ``statistics`` (no transcript): the same GMM, on pairs found INCA-style: each source frame with its nearest
  target frame, first after normalising each speaker's coefficients, then after converting with the last fit.

Both first warp the source's frequency axis (formants scaled by a vocal-tract-length factor) by the factor under
which its frames match the target's best (DTW distance, or nearest-neighbour distance): the GMM's affine maps
cannot move formants with a few seconds of data, and the warp also makes the alignment better (measured: +0.02
mean similarity, +0.12 for female targets). The converted envelope is applied as a difference filter on the
warped source envelope, which keeps the source's fine spectral detail.

Streaming: the input is converted in blocks on a fixed frame grid (every block boundary is a multiple of the
hop from the segment start, so a frame is analysed at the same instant whatever the chunking), each block with
left context and a little lookahead; consecutive re-syntheses are crossfaded over a short overlap.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyworld

from chorus.audio.resample import resample

FORMAT_VERSION = 1
KINDS = ("parallel", "statistics", "fixed-warp")

HOP = 256  # samples between WORLD frames (11.6 ms at 22050 Hz; Piper's own hop)
FFT_SIZE = 1024  # cheaptrick's window needs fft_size >= 3 * fs / f0_floor
F0_FLOOR = 65.0
F0_CEIL = 500.0
ORDER = 24  # coded envelope dimensions (c0 + 23 coefficients that carry the speaker)
CONTEXT = 4 * HOP  # samples of retained left context per block (dio's and cheaptrick's windows)
LOOKAHEAD = 2 * HOP  # samples analysed past a block's end
CROSSFADE = 2 * HOP  # overlap of consecutive re-syntheses
MIN_SPEECH_SECONDS = 1.0
MIN_VOICED_FRAMES = 40
SILENCE_DB = 35.0  # frames this far below the loud frames are silence (not fitted on)


@dataclass(frozen=True)
class _Features:
    """WORLD analysis of one signal on the frame grid."""

    f0: np.ndarray  # (T,) Hz, 0 where unvoiced
    sp: np.ndarray  # (T, FFT_SIZE // 2 + 1) power envelope
    ap: np.ndarray  # (T, FFT_SIZE // 2 + 1) aperiodicity


class ConversionModel:
    """A fitted conversion to one target speaker; immutable, shared by every converter of the voice."""

    def __init__(
        self,
        *,
        sample_rate: int,
        kind: str,
        f0_stats: np.ndarray,
        warp: float,
        weights: np.ndarray,
        means_x: np.ndarray,
        covs_x: np.ndarray,
        transforms: np.ndarray,
        biases: np.ndarray,
        gv_center: np.ndarray,
        gv_scale: np.ndarray,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown conversion kind {kind!r}")
        if sample_rate < 8000 or sample_rate > 96000:
            raise ValueError(f"unsupported sample rate {sample_rate}")
        k = ORDER - 1
        m = weights.shape[0] if weights.ndim == 1 else -1
        expected = {
            "f0_stats": (f0_stats, (4,)),
            "means_x": (means_x, (m, k)),
            "covs_x": (covs_x, (m, k, k)),
            "transforms": (transforms, (m, k, k)),
            "biases": (biases, (m, k)),
            "gv_center": (gv_center, (k,)),
            "gv_scale": (gv_scale, (k,)),
        }
        if m < 1:
            raise ValueError("bad mixture weights")
        for name, (array, shape) in expected.items():
            if array.shape != shape:
                raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
        arrays = [f0_stats, weights, *(a for a, _ in expected.values())]
        if not all(np.all(np.isfinite(a)) for a in arrays) or not np.isfinite(warp):
            raise ValueError("the model holds non-finite parameters")
        if not 0.5 <= warp <= 2.0 or f0_stats[1] <= 0 or f0_stats[3] <= 0 or np.any(weights <= 0):
            raise ValueError("model parameters out of range")
        self.sample_rate = int(sample_rate)
        self.kind = kind
        # Stored as float32 (compact), computed with in float64: a loaded model converts exactly as the original.
        self._f0_stats = _f32(f0_stats)
        self.warp = float(np.float32(warp))  # frequency-axis scaling of the source's formants
        self._weights = _f32(weights)
        self._means_x = _f32(means_x)
        self._covs_x = _f32(covs_x)
        self._transforms = _f32(transforms)
        self._biases = _f32(biases)
        self._gv_center = _f32(gv_center)
        self._gv_scale = _f32(gv_scale)
        self._warp_index, self._warp_frac = _warp_table(self.warp, sample_rate)
        # Per-mixture Gaussian of the source features, for the posteriors.
        covs = self._covs_x.astype(np.float64)
        try:
            chol = np.linalg.cholesky(covs)
        except np.linalg.LinAlgError as e:
            raise ValueError("the model's covariances are not positive definite") from e
        self._inv_chol = np.linalg.inv(chol)
        self._log_norm = (
            np.log(self._weights.astype(np.float64) / self._weights.sum())
            - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
            - 0.5 * k * np.log(2 * np.pi)
        )

    # -- fitting ------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, target: np.ndarray, target_sr: int, source: np.ndarray, source_sr: int, *, sample_rate: int
    ) -> ConversionModel:
        """Parallel fit: ``source`` is the base voice saying the same words as ``target``.

        Frames are paired by DTW (first on per-speaker normalised features, then on converted source features),
        a joint-density GMM is fitted on the pairs, and global variance is restored after MMSE conversion.
        """
        return cls._fit(
            "parallel", target, target_sr, source, source_sr, sample_rate, _dtw_warp, lambda a, b: _dtw(a, b)[0]
        )

    @classmethod
    def _fit(
        cls,
        kind: str,
        target: np.ndarray,
        target_sr: int,
        source: np.ndarray,
        source_sr: int,
        sample_rate: int,
        choose_warp: Callable[[np.ndarray, np.ndarray, int], float],
        align: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> ConversionModel:
        """Analyse both speakers, warp the source by ``choose_warp``'s factor, then fit on ``align``'s pairs."""
        tgt = _prepare(target, target_sr, sample_rate, "target")
        src = _prepare(source, source_sr, sample_rate, "source")
        tf = _analyse(tgt, sample_rate)
        sf = _analyse(src, sample_rate)
        f0_stats = np.concatenate([_log_f0_stats(sf.f0, "source"), _log_f0_stats(tf.f0, "target")])
        x_speech, y_speech = _speech_indices(sf, tf)
        y = _coded(tf.sp[y_speech], sample_rate)[0][:, 1:]
        warp = choose_warp(sf.sp[x_speech], y, sample_rate)
        x = _coded(_apply_warp(sf.sp[x_speech], *_warp_table(warp, sample_rate)), sample_rate)[0][:, 1:]
        return cls._fit_pairs(kind, sample_rate, f0_stats, warp, x, y, align)

    @classmethod
    def _fit_pairs(
        cls,
        kind: str,
        sample_rate: int,
        f0_stats: np.ndarray,
        warp: float,
        x: np.ndarray,
        y: np.ndarray,
        align: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> ConversionModel:
        """Alternate aligning frames (first on per-speaker normalised coefficients, then on the converted
        source) and fitting the joint GMM on the aligned pairs."""
        pairs = align(_normalise(x), _normalise(y))
        model = None
        for _ in range(DTW_ITERATIONS):
            gmm = _fit_gmm(np.hstack([x[pairs[:, 0]], y[pairs[:, 1]]]), MIXTURES)
            model = cls._from_gmm(kind, sample_rate, f0_stats, warp, gmm, x[pairs[:, 0]], y[pairs[:, 1]])
            pairs = align(model._map(x), y)
        assert model is not None
        return model

    @classmethod
    def fit_statistics(
        cls, target: np.ndarray, target_sr: int, source: np.ndarray, source_sr: int, *, sample_rate: int
    ) -> ConversionModel:
        """No transcript: ``source`` is any base-voice speech. Frames are paired by nearest neighbour rather than
        by time (INCA-style alignment), otherwise as :meth:`fit`."""
        return cls._fit("statistics", target, target_sr, source, source_sr, sample_rate, _nearest_warp, _nearest_pairs)

    @classmethod
    def fit_fixed_warp(
        cls,
        target: np.ndarray,
        target_sr: int,
        source: np.ndarray,
        source_sr: int,
        *,
        sample_rate: int,
        warp: float,
    ) -> ConversionModel:
        """The reference method the benchmark compares against: log-F0 mapping and a given frequency warp,
        the envelope otherwise untouched."""
        tgt = _prepare(target, target_sr, sample_rate, "target")
        src = _prepare(source, source_sr, sample_rate, "source")
        f0_stats = np.concatenate(
            [
                _log_f0_stats(_analyse(src, sample_rate).f0, "source"),
                _log_f0_stats(_analyse(tgt, sample_rate).f0, "target"),
            ]
        )
        k = ORDER - 1
        return cls(
            sample_rate=sample_rate,
            kind="fixed-warp",
            f0_stats=f0_stats,
            warp=warp,
            weights=np.ones(1),
            means_x=np.zeros((1, k)),
            covs_x=np.eye(k)[None],
            transforms=np.eye(k)[None],
            biases=np.zeros((1, k)),
            gv_center=np.zeros(k),
            gv_scale=np.ones(k),
        )

    @classmethod
    def _from_gmm(
        cls, kind: str, sample_rate: int, f0_stats: np.ndarray, warp: float, gmm: _Gmm, x: np.ndarray, y: np.ndarray
    ) -> ConversionModel:
        """Joint GMM → per-mixture affine maps E[y | x, m] = A_m x + b_m, plus the global-variance scaling that
        brings the converted training frames' variance back to the target's."""
        k = x.shape[1]
        means_x, means_y = gmm.means[:, :k], gmm.means[:, k:]
        covs_xx, covs_yx = gmm.covs[:, :k, :k], gmm.covs[:, k:, :k]
        transforms = np.linalg.solve(covs_xx, covs_yx.transpose(0, 2, 1)).transpose(0, 2, 1)
        biases = means_y - np.einsum("mij,mj->mi", transforms, means_x)
        fields = {
            "sample_rate": sample_rate,
            "kind": kind,
            "f0_stats": f0_stats,
            "warp": warp,
            "weights": gmm.weights,
            "means_x": means_x,
            "covs_x": covs_xx,
            "transforms": transforms,
            "biases": biases,
        }
        converted = cls(**fields, gv_center=np.zeros(k), gv_scale=np.ones(k))._map(x)
        center = converted.mean(axis=0)
        scale = np.clip((y.std(axis=0) + 1e-6) / (converted.std(axis=0) + 1e-6), 1.0, GV_MAX_SCALE)
        return cls(**fields, gv_center=center, gv_scale=scale)

    # -- persistence --------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A versioned ``.npz`` (float32 arrays, no pickle); a few tens of kB."""
        out = io.BytesIO()
        np.savez_compressed(
            out,
            version=np.array(FORMAT_VERSION, np.int32),
            sample_rate=np.array(self.sample_rate, np.int32),
            kind=np.array(self.kind),
            order=np.array(ORDER, np.int32),
            hop=np.array(HOP, np.int32),
            fft_size=np.array(FFT_SIZE, np.int32),
            warp=np.array(self.warp, np.float32),
            f0_stats=self._f0_stats,
            weights=self._weights,
            means_x=self._means_x,
            covs_x=self._covs_x,
            transforms=self._transforms,
            biases=self._biases,
            gv_center=self._gv_center,
            gv_scale=self._gv_scale,
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ConversionModel:
        """Inverse of :meth:`to_bytes`; ValueError for anything else (garbage, another version or analysis)."""
        try:
            loaded = np.load(io.BytesIO(data), allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an archive")
            with loaded as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise ValueError(f"not a conversion model ({e})") from e
        try:
            version = int(arrays["version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"conversion model version {version}; this build reads version {FORMAT_VERSION}")
            analysis = (int(arrays["order"]), int(arrays["hop"]), int(arrays["fft_size"]))
            if analysis != (ORDER, HOP, FFT_SIZE):
                raise ValueError(f"conversion model made for analysis {analysis}, not {(ORDER, HOP, FFT_SIZE)}")
            return cls(
                sample_rate=int(arrays["sample_rate"]),
                kind=str(arrays["kind"]),
                f0_stats=arrays["f0_stats"],
                warp=float(arrays["warp"]),
                weights=arrays["weights"],
                means_x=arrays["means_x"],
                covs_x=arrays["covs_x"],
                transforms=arrays["transforms"],
                biases=arrays["biases"],
                gv_center=arrays["gv_center"],
                gv_scale=arrays["gv_scale"],
            )
        except KeyError as e:
            raise ValueError(f"conversion model lacks {e}") from e
        except TypeError as e:
            raise ValueError(f"malformed conversion model ({e})") from e

    # -- conversion ---------------------------------------------------------------------------------

    def stream(self) -> StreamConverter:
        return StreamConverter(self)

    def convert(self, audio: np.ndarray) -> np.ndarray:
        """A whole clip at ``sample_rate`` (one block: the reference that streaming approximates)."""
        converter = self.stream()
        return np.concatenate([converter.process(audio), converter.flush()])

    def _map(self, coded: np.ndarray) -> np.ndarray:
        """Coefficients c1.. of the source (T, K) → the target's: posterior-weighted affine maps, then GV."""
        x = coded.astype(np.float64)
        diff = x[:, None, :] - self._means_x.astype(np.float64)[None]
        z = np.einsum("mij,tmj->tmi", self._inv_chol, diff)
        log_p = self._log_norm[None] - 0.5 * np.sum(z * z, axis=2)
        log_p -= log_p.max(axis=1, keepdims=True)
        posteriors = np.exp(log_p)
        posteriors /= posteriors.sum(axis=1, keepdims=True)
        mapped = np.einsum("mij,tj->tmi", self._transforms.astype(np.float64), x) + self._biases.astype(np.float64)
        y = np.einsum("tm,tmi->ti", posteriors, mapped)
        center = self._gv_center.astype(np.float64)
        return np.asarray((y - center) * self._gv_scale.astype(np.float64) + center)

    def _convert_features(self, feats: _Features) -> tuple[np.ndarray, np.ndarray]:
        """(F0, envelope) of the converted speaker for analysed source frames."""
        mean_s, std_s, mean_t, std_t = (float(v) for v in self._f0_stats)
        voiced = feats.f0 > 0
        f0 = np.zeros_like(feats.f0)
        f0[voiced] = np.exp((np.log(feats.f0[voiced]) - mean_s) * (std_t / std_s) + mean_t)
        sp = _apply_warp(feats.sp, self._warp_index, self._warp_frac)
        if self.kind == "fixed-warp":
            return f0, sp
        coded, smooth = _coded(sp, self.sample_rate)
        converted = np.hstack([coded[:, :1], self._map(coded[:, 1:])])
        target = pyworld.decode_spectral_envelope(np.ascontiguousarray(converted), self.sample_rate, FFT_SIZE)
        return f0, sp * (target / smooth)


class StreamConverter:
    """One request's conversion state: buffered input, the frame grid's origin, the tail awaiting crossfade.

    ``process`` returns audio up to ``latency_samples`` behind its input (the lookahead and the crossfade,
    plus less than a hop when a chunk is not a whole number of hops); ``flush`` returns the rest and resets.
    """

    latency_samples = LOOKAHEAD + CROSSFADE

    def __init__(self, model: ConversionModel) -> None:
        self.model = model
        self._reset()

    def _reset(self) -> None:
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0] (a multiple of HOP)
        self._received = 0  # absolute samples received in this segment
        self._emitted = 0  # absolute samples returned so far
        self._tail = np.zeros(0, np.float32)  # synthesis of [emitted, emitted + len(tail)), for the crossfade

    def process(self, audio: np.ndarray) -> np.ndarray:
        chunk = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(chunk)):
            raise ValueError("the audio contains NaN or infinite samples")
        self._buffer = np.concatenate([self._buffer, chunk])
        self._received += chunk.size
        end = (self._received - LOOKAHEAD - CROSSFADE) // HOP * HOP
        if end <= self._emitted:
            return np.zeros(0, np.float32)
        return self._emit(end, end + CROSSFADE)

    def flush(self) -> np.ndarray:
        out = self._emit(self._received, self._received) if self._received > self._emitted else self._tail[:0]
        self._reset()
        return out

    def _emit(self, end: int, synth_end: int) -> np.ndarray:
        """Convert [emitted, synth_end), crossfade its start with the held tail, return [emitted, end)."""
        start = self._emitted
        lo = max(0, (start - CONTEXT) // HOP * HOP)
        hi = min(self._received, synth_end + LOOKAHEAD)
        window = self._buffer[lo - self._buffer_start : hi - self._buffer_start]
        converted = _convert_block(self.model, window)[start - lo : synth_end - lo]
        n = min(self._tail.size, converted.size)
        if n:
            fade = _fade(n)
            converted[:n] = self._tail[:n] * (1.0 - fade) + converted[:n] * fade
        self._tail = converted[end - start :].copy()
        self._emitted = end
        keep_from = max(0, (end - CONTEXT) // HOP * HOP)
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return np.asarray(np.clip(converted[: end - start], -1.0, 1.0), dtype=np.float32)


# -- analysis and synthesis -----------------------------------------------------------------------------------

MIXTURES = 4
DTW_ITERATIONS = 3
GV_MAX_SCALE = 3.0
GMM_REG = 0.1
WARP_GRID = (0.85, 0.925, 1.0, 1.075, 1.15, 1.225, 1.3)
MIN_FRAMES_PER_DIM = 4


def _convert_block(model: ConversionModel, audio: np.ndarray) -> np.ndarray:
    """Analyse, convert and re-synthesise ``audio`` (its start on the frame grid); same length out."""
    n = audio.size
    # WORLD needs a few frames; a block's end is padded with silence (the segment ends there anyway).
    padded = np.zeros(max(n, 4 * HOP) // HOP * HOP + HOP + 1, np.float64)
    padded[:n] = audio
    feats = _analyse(padded, model.sample_rate)
    f0, sp = model._convert_features(feats)
    out = pyworld.synthesize(
        np.ascontiguousarray(f0),
        np.ascontiguousarray(sp),
        feats.ap,
        model.sample_rate,
        _frame_period(model.sample_rate),
    )
    result = np.zeros(n, np.float32)
    m = min(n, out.size)
    result[:m] = out[:m]
    return result


def _analyse(audio: np.ndarray, sample_rate: int) -> _Features:
    x = np.ascontiguousarray(audio, dtype=np.float64)
    period = _frame_period(sample_rate)
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=period)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    sp = pyworld.cheaptrick(x, f0, times, sample_rate, f0_floor=F0_FLOOR, fft_size=FFT_SIZE)
    ap = pyworld.d4c(x, f0, times, sample_rate, fft_size=FFT_SIZE)
    return _Features(f0, sp, ap)


def _frame_period(sample_rate: int) -> float:
    return 1000.0 * HOP / sample_rate


def _coded(sp: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(coded envelope (T, ORDER), the envelope it decodes back to): the mapping's features and the reference
    for the difference filter."""
    coded = pyworld.code_spectral_envelope(np.ascontiguousarray(sp), sample_rate, ORDER)
    return coded, pyworld.decode_spectral_envelope(coded, sample_rate, FFT_SIZE)


def _warp_table(warp: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Source bin for each output bin of a piecewise-linear warp: formants scaled by ``warp`` up to 70 % of
    Nyquist, the rest squeezed or stretched to end at Nyquist (so no band is lost or left empty)."""
    bins = FFT_SIZE // 2 + 1
    out = np.arange(bins, dtype=np.float64)
    knee = 0.7 * (bins - 1)
    src = np.where(out <= knee, out / warp, knee / warp + (out - knee) * ((bins - 1) - knee / warp) / (bins - 1 - knee))
    src = np.clip(src, 0, bins - 1)
    index = np.minimum(np.floor(src).astype(np.int64), bins - 2)
    return index, src - index


def _apply_warp(sp: np.ndarray, index: np.ndarray, frac: np.ndarray) -> np.ndarray:
    if np.all(frac == 0) and np.array_equal(index[:-1], np.arange(index.size - 1)):
        return sp
    log_sp = np.log(sp)
    return np.asarray(np.exp(log_sp[:, index] * (1.0 - frac) + log_sp[:, index + 1] * frac))


def _dtw_warp(source_sp: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """The warp under which the source aligns best with the target (lowest mean DTW distance)."""
    best, best_cost = 1.0, np.inf
    for warp in WARP_GRID:
        x = _coded(_apply_warp(source_sp, *_warp_table(float(warp), sample_rate)), sample_rate)[0][:, 1:]
        cost = _dtw(_normalise(x), _normalise(y))[1]
        if cost < best_cost:
            best, best_cost = float(warp), cost
    return best


def _nearest_warp(source_sp: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """Without pairs: the warp under which each source frame's nearest target frame is nearest on average
    (after normalising each speaker's coefficients), a DTW without the time constraint."""
    best, best_cost = 1.0, np.inf
    ty = _normalise(y)[:: max(1, len(y) // 400)]
    for warp in WARP_GRID:
        x = _coded(_apply_warp(source_sp, *_warp_table(float(warp), sample_rate)), sample_rate)[0][:, 1:]
        tx = _normalise(x)[:: max(1, len(x) // 400)]
        d = np.sqrt(((tx[:, None, :] - ty[None, :, :]) ** 2).sum(axis=2))
        cost = float(d.min(axis=1).mean() + d.min(axis=0).mean())
        if cost < best_cost:
            best, best_cost = float(warp), cost
    return best


def _nearest_pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each source frame with its nearest target frame (no time order: the texts differ)."""
    nearest = np.empty(len(x), np.int64)
    for start in range(0, len(x), 256):
        block = x[start : start + 256]
        nearest[start : start + 256] = np.argmin(((block[:, None, :] - y[None, :, :]) ** 2).sum(axis=2), axis=1)
    return np.stack([np.arange(len(x)), nearest], axis=1)


# -- fitting helpers ------------------------------------------------------------------------------------------


def _prepare(audio: np.ndarray, rate: int, sample_rate: int, what: str) -> np.ndarray:
    wav = np.asarray(audio, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"the {what} audio must be mono (1-D), got shape {wav.shape}")
    if rate <= 0:
        raise ValueError(f"bad {what} sample rate {rate}")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"the {what} audio contains NaN or infinite samples")
    if wav.size < MIN_SPEECH_SECONDS * rate:
        raise ValueError(
            f"the {what} audio is too short: {wav.size / rate:.2f} s, need at least {MIN_SPEECH_SECONDS} s"
        )
    if float(np.max(np.abs(wav))) < 1e-4:
        raise ValueError(f"the {what} audio is silent")
    return resample(wav, rate, sample_rate).astype(np.float64) if rate != sample_rate else wav.astype(np.float64)


def _log_f0_stats(f0: np.ndarray, what: str) -> np.ndarray:
    voiced = f0[f0 > 0]
    if voiced.size < MIN_VOICED_FRAMES:
        raise ValueError(f"the {what} audio has too little voiced speech ({voiced.size} voiced frames)")
    log_f0 = np.log(voiced)
    return np.array([log_f0.mean(), max(float(log_f0.std()), 0.02)])


def _speech_indices(source: _Features, target: _Features) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the frames with speech in each (fitted on: silence says nothing about a voice)."""
    x, y = np.flatnonzero(_speech_frames(source.sp)), np.flatnonzero(_speech_frames(target.sp))
    if min(len(x), len(y)) < 2 * MIN_VOICED_FRAMES:
        raise ValueError("too little speech to fit a conversion (need about a second of speech in each clip)")
    return x, y


def _speech_frames(sp: np.ndarray) -> np.ndarray:
    energy = 10 * np.log10(np.mean(sp, axis=1) + 1e-20)
    return np.asarray(energy > np.percentile(energy, 95) - SILENCE_DB)


def _normalise(x: np.ndarray) -> np.ndarray:
    return np.asarray((x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6))


def _dtw(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(pairs, mean distance along the path). A pair (i, j) for each source frame i, j non-decreasing by 0-3
    frames per step (the target may run up to three times as fast, or stall). Each row of the recursion depends
    only on the previous one, so it is vectorised over the target."""
    cost = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=2))
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    back = np.zeros((n, m), np.int8)
    acc[0] = cost[0]
    acc[0, 8:] = np.inf  # start near the beginning of both
    for i in range(1, n):
        prev = acc[i - 1]
        options = np.full((4, m), np.inf)
        options[0] = prev
        for step in range(1, 4):
            options[step, step:] = prev[:-step]
        back[i] = np.argmin(options, axis=0)
        acc[i] = cost[i] + options[back[i], np.arange(m)]
    j = int(np.argmin(acc[-1, max(0, m - 8) :])) + max(0, m - 8)
    path = np.zeros((n, 2), np.int64)
    for i in range(n - 1, -1, -1):
        path[i] = (i, j)
        j -= int(back[i, j])
    return path, float(acc[-1, path[-1, 1]]) / n


@dataclass(frozen=True)
class _Gmm:
    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray


def _fit_gmm(z: np.ndarray, mixtures: int, iterations: int = 30, reg: float | None = None) -> _Gmm:
    """Full-covariance GMM by EM from a seeded k-means start; covariances get ``reg`` x each dimension's variance
    added to their diagonal (a few hundred frames per mixture would leave them near singular)."""
    n, d = z.shape
    mixtures = max(1, min(mixtures, n // (MIN_FRAMES_PER_DIM * d)))
    rng = np.random.default_rng(0)
    floor = (GMM_REG if reg is None else reg) * np.diag(z.var(axis=0))
    centers = z[rng.choice(n, mixtures, replace=False)]
    for _ in range(10):
        labels = np.argmin(((z[:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1)
        centers = np.array(
            [z[labels == m].mean(axis=0) if np.any(labels == m) else centers[m] for m in range(mixtures)]
        )
    resp = np.eye(mixtures)[labels]
    for _ in range(iterations):
        counts = resp.sum(axis=0) + 1e-9
        weights = counts / n
        means = resp.T @ z / counts[:, None]
        covs = np.empty((mixtures, d, d))
        for m in range(mixtures):
            diff = z - means[m]
            covs[m] = (resp[:, m, None] * diff).T @ diff / counts[m] + floor
        chol = np.linalg.cholesky(covs)
        log_p = np.empty((n, mixtures))
        for m in range(mixtures):
            sol = np.linalg.solve(chol[m], (z - means[m]).T)
            log_p[:, m] = np.log(weights[m]) - np.log(np.diag(chol[m])).sum() - 0.5 * np.sum(sol * sol, axis=0)
        log_p -= log_p.max(axis=1, keepdims=True)
        resp = np.exp(log_p)
        resp /= resp.sum(axis=1, keepdims=True)
    return _Gmm(weights, means, covs)


def _fade(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _f32(a: np.ndarray) -> np.ndarray:
    out = np.asarray(a, dtype=np.float32).copy()
    out.flags.writeable = False
    return out
