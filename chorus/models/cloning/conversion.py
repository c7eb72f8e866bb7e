"""Classical voice conversion with WORLD: the base voice's speech, re-synthesised as another speaker.

Piper has one speaker; a cloned voice is Piper's audio converted towards the reference speaker. Each frame is
analysed with WORLD (dio + stonemask F0, cheaptrick envelope, d4c aperiodicity), its F0 moved by a log-F0
mean/variance mapping, its spectral envelope mapped to the target speaker, and it is re-synthesised.

Envelope mapping, on WORLD's coded envelope (a mel-cepstrum) without its energy term c0:

* ``parallel`` (the reference's transcript is known, so the base voice can say the same words): source and
  target frames are paired by DTW, both ways (each source frame with a target frame and each target frame with a
  source frame), re-aligned after each fit, and a joint-density GMM (up to 16 mixtures, covariances floored)
  gives a mixture of affine maps, followed by a global-variance scaling (MMSE over-smooths: it pulls every frame
  towards the mean, which sounds muffled and less like anyone; measured, GV is worth +0.08 similarity).
* ``statistics`` (no transcript): the same GMM, on pairs found INCA-style, both ways: each source frame with its
  nearest target frame and each target frame with its nearest source frame, first after normalising each
  speaker's coefficients, then after converting with the last fit.

Each mixture's affine map blends the GMM's regression E[y | x, m] with a diagonal map that gives each coefficient
the target's mean and spread within the mixture. Tuned on the development set of ``chorus bench-voices`` only
(10 speakers, whole-clip conversion; resemblyzer similarity and, as a check that the words survive, 1 - word
error rate of pocketsphinx 5.1.1's free decoding of the four converted sentences, not part of the bench). The
previous fit (regression only, at most ~2 mixtures, pairs one way) scored 0.795 with a transcript / 0.797
without, word accuracy 0.26 / 0.24 (Piper itself: 0.68):

* 16 mixtures, covariance floor 0.3: 0.807 / 0.798, but word accuracy 0.21 / 0.25;
* blending in the diagonal map (regression weight 1 → 0.9 → 0.75 → 0.5 → 0; with a transcript, 16 mixtures,
  pairs one way): similarity 0.807 → 0.809 → 0.806 → 0.793 → 0.771, word accuracy 0.21 → 0.25 → 0.34 → 0.40
  → 0.49: the full regression, fitted on a few hundred frames, mixes and shrinks the coefficients and GV
  amplifies its errors;
* pairs both ways: 0.819 with a transcript (weight 0.75), 0.817 without (weight 0.9).

The weights are the most similar setting whose word accuracy stays at least the previous fit's (within 0.01):
0.75 with a transcript (0.819, word accuracy 0.26), 0.9 without (0.817, 0.33). Mapping c0 too, a per-mixture
c0 offset, a higher order (32, 40) and a finer warp grid made no difference or cost words; the target's own
(DTW-aligned) F0 contour or aperiodicity in place of ours changed nothing either (the envelope is what carries
the speaker), so neither is mapped further; picking single target frames (k-nearest neighbours, k=1) reached
0.818 but halved word accuracy.

Both first warp the source's frequency axis (formants scaled by a vocal-tract-length factor) by the factor under
which its frames match the target's best (DTW distance, or nearest-neighbour distance): the GMM's affine maps
cannot move formants with a few seconds of data, and the warp also makes the alignment better (measured: +0.02
mean similarity, +0.12 for female targets). The converted envelope is applied as a difference filter on the
warped source envelope, which keeps the source's fine spectral detail.

WORLD analysis lives in ``world``, frame pairing and the GMM in ``alignment``, streaming in ``conversion_stream``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np
import pyworld

from chorus.audio.resample import resample
from chorus.models.cloning import alignment, world
from chorus.models.cloning.conversion_stream import StreamConverter
from chorus.models.cloning.world import FFT_SIZE, HOP, ORDER

FORMAT_VERSION = 1
KINDS = ("parallel", "statistics", "fixed-warp")

__all__ = ["ConversionModel", "StreamConverter"]

MIN_SPEECH_SECONDS = 1.0
MIN_VOICED_FRAMES = 40
SILENCE_DB = 35.0  # frames this far below the loud frames are silence (not fitted on)
MIXTURES = 16  # at most: fit_gmm allows one mixture per frame per joint dimension (~8 for an 8 s reference)
DTW_ITERATIONS = 3
GV_MAX_SCALE = 3.0
# Each mixture's map: this much of the joint GMM's regression, the rest its per-dimension mean/variance mapping;
# per kind, chosen on the development set (see the module docstring).
REGRESSION_WEIGHT = {"parallel": 0.75, "statistics": 0.9}


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
        self._warp_index, self._warp_frac = world.warp_table(self.warp, sample_rate)
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
            "parallel",
            target,
            target_sr,
            source,
            source_sr,
            sample_rate,
            alignment.dtw_warp,
            alignment.dtw_pairs,
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
        tf = world.analyse(tgt, sample_rate)
        sf = world.analyse(src, sample_rate)
        f0_stats = np.concatenate([_log_f0_stats(sf.f0, "source"), _log_f0_stats(tf.f0, "target")])
        x_speech, y_speech = _speech_indices(sf, tf)
        y = world.coded(tf.sp[y_speech], sample_rate)[0][:, 1:]
        warp = choose_warp(sf.sp[x_speech], y, sample_rate)
        x = world.coded(world.apply_warp(sf.sp[x_speech], *world.warp_table(warp, sample_rate)), sample_rate)[0][:, 1:]
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
        pairs = align(alignment.normalise(x), alignment.normalise(y))
        model = None
        for _ in range(DTW_ITERATIONS):
            gmm = alignment.fit_gmm(np.hstack([x[pairs[:, 0]], y[pairs[:, 1]]]), MIXTURES)
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
        return cls._fit(
            "statistics",
            target,
            target_sr,
            source,
            source_sr,
            sample_rate,
            alignment.nearest_warp,
            alignment.nearest_pairs,
        )

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
                _log_f0_stats(world.analyse(src, sample_rate).f0, "source"),
                _log_f0_stats(world.analyse(tgt, sample_rate).f0, "target"),
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
        cls,
        kind: str,
        sample_rate: int,
        f0_stats: np.ndarray,
        warp: float,
        gmm: alignment.Gmm,
        x: np.ndarray,
        y: np.ndarray,
    ) -> ConversionModel:
        """Joint GMM → per-mixture affine maps y = A_m x + b_m, plus the global-variance scaling that brings the
        converted training frames' variance back to the target's.

        A_m blends the regression E[y | x, m] (weight ``REGRESSION_WEIGHT[kind]``) with a diagonal map that gives each
        coefficient the target's mean and spread within the mixture. The regression alone, fitted on a few hundred
        frames, mixes the coefficients and shrinks them (GV then amplifies what it got wrong), which costs
        intelligibility; the diagonal map alone keeps the source's articulation but converts less."""
        k = x.shape[1]
        means_x, means_y = gmm.means[:, :k], gmm.means[:, k:]
        covs_xx, covs_yx = gmm.covs[:, :k, :k], gmm.covs[:, k:, :k]
        regression = np.linalg.solve(covs_xx, covs_yx.transpose(0, 2, 1)).transpose(0, 2, 1)
        var_x = np.diagonal(covs_xx, axis1=1, axis2=2)  # [M, K]
        var_y = np.diagonal(gmm.covs[:, k:, k:], axis1=1, axis2=2)
        spread = np.sqrt(var_y / var_x)[:, :, None] * np.eye(k)[None]  # [M, K, K] diagonal
        weight = REGRESSION_WEIGHT[kind]
        transforms = weight * regression + (1.0 - weight) * spread
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

    def convert_features(self, feats: world.Features) -> tuple[np.ndarray, np.ndarray]:
        """(F0, envelope) of the converted speaker for analysed source frames."""
        mean_s, std_s, mean_t, std_t = (float(v) for v in self._f0_stats)
        voiced = feats.f0 > 0
        f0 = np.zeros_like(feats.f0)
        f0[voiced] = np.exp((np.log(feats.f0[voiced]) - mean_s) * (std_t / std_s) + mean_t)
        sp = world.apply_warp(feats.sp, self._warp_index, self._warp_frac)
        if self.kind == "fixed-warp":
            return f0, sp
        coded, smooth = world.coded(sp, self.sample_rate)
        converted = np.hstack([coded[:, :1], self._map(coded[:, 1:])])
        target = pyworld.decode_spectral_envelope(np.ascontiguousarray(converted), self.sample_rate, FFT_SIZE)
        return f0, sp * (target / smooth)


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


def _speech_indices(source: world.Features, target: world.Features) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the frames with speech in each (fitted on: silence says nothing about a voice)."""
    x, y = np.flatnonzero(_speech_frames(source.sp)), np.flatnonzero(_speech_frames(target.sp))
    if min(len(x), len(y)) < 2 * MIN_VOICED_FRAMES:
        raise ValueError("too little speech to fit a conversion (need about a second of speech in each clip)")
    return x, y


def _speech_frames(sp: np.ndarray) -> np.ndarray:
    energy = 10 * np.log10(np.mean(sp, axis=1) + 1e-20)
    return np.asarray(energy > np.percentile(energy, 95) - SILENCE_DB)


def _f32(a: np.ndarray) -> np.ndarray:
    out = np.asarray(a, dtype=np.float32).copy()
    out.flags.writeable = False
    return out
