"""Speaker embeddings: resemblyzer's GE2E d-vectors (256-d, weights shipped inside the package).

They answer "does this sound like that speaker?" — to check a cloned voice against its reference, to
spot duplicate uploads of one voice — without running a TTS model. resemblyzer (and torch, librosa) are
imported on first use, so that importing chorus stays cheap and servers that never embed never load them.

Threads: the encoder is a small LSTM run on short clips, where torch's intra-op parallelism costs far more
than it saves (measured: 0.05 s with 1 thread, up to 3 s with 2 on a busy 2-core machine). torch's thread
count is process-wide, so each call sets it to ``num_threads`` and restores it afterwards, under one lock
shared by every encoder; other torch work running in that same window also sees the lowered count.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from chorus.audio.resample import resample

EMBEDDING_DIM = 256
ENCODER_SAMPLE_RATE = 16_000  # the rate resemblyzer's mel front end and weights expect
_NORMALISE_DBFS = -30  # resemblyzer's own preprocessing level (audio_norm_target_dBFS)

INSTALL_HINT = (
    "speaker embeddings need resemblyzer: pip install 'resemblyzer>=0.1.4' 'setuptools<81' "
    "(its webrtcvad imports pkg_resources, which setuptools 81 removed); install torch first to choose its build"
)

_torch_threads_lock = threading.Lock()


class SpeakerEncoder:
    """Embeds speech as a unit-length float32 vector; thread-safe (calls run one at a time)."""

    def __init__(self, *, num_threads: int = 1) -> None:
        self.num_threads = num_threads
        self._model: Any = None
        self._load_lock = threading.Lock()

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float audio at any rate → (256,) float32, L2-normalised. Raises ValueError for unusable audio."""
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"expected non-empty mono audio (1-D), got shape {wav.shape}")
        if not np.all(np.isfinite(wav)):
            raise ValueError("the audio contains NaN or infinite samples")
        wav = np.clip(resample(wav, sample_rate, ENCODER_SAMPLE_RATE), -1.0, 1.0)
        if not np.any(wav):
            raise ValueError("the audio is silent")
        model, audio_module = self._load()
        # resemblyzer's preprocessing: raise quiet audio to -30 dBFS, then cut long pauses (webrtcvad). If the
        # VAD finds no voice at all (synthetic or odd audio), the whole clip is used rather than nothing.
        wav = np.asarray(audio_module.normalize_volume(wav, _NORMALISE_DBFS, increase_only=True), np.float32)
        voiced = np.asarray(audio_module.trim_long_silences(wav), np.float32)
        if voiced.size >= ENCODER_SAMPLE_RATE // 2:
            wav = voiced
        embedding = np.asarray(self._run(model, wav), dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(embedding))
        if embedding.shape != (EMBEDDING_DIM,) or not np.isfinite(norm) or norm == 0.0:
            raise ValueError("the speaker encoder produced no usable embedding for this audio")
        return embedding / np.float32(norm)

    def warm_up(self) -> None:
        """Load the model and run it once: the first call in a process pays for importing librosa's
        spectrogram code and loading numba-compiled functions (about 3 s here; ~30 s the very first time
        on a machine, while numba compiles and caches)."""
        rng = np.random.default_rng(0)
        self.embed((0.1 * rng.standard_normal(ENCODER_SAMPLE_RATE)).astype(np.float32), ENCODER_SAMPLE_RATE)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity in [-1, 1] (GE2E embeddings are non-negative, so in practice [0, 1])."""
        a64 = np.asarray(a, np.float64).reshape(-1)
        b64 = np.asarray(b, np.float64).reshape(-1)
        if a64.shape != b64.shape:
            raise ValueError(f"embeddings differ in size: {a64.size} vs {b64.size}")
        denominator = float(np.linalg.norm(a64) * np.linalg.norm(b64))
        if denominator == 0.0:
            raise ValueError("cannot compare a zero embedding")
        return float(np.dot(a64, b64)) / denominator

    @staticmethod
    def to_bytes(embedding: np.ndarray) -> bytes:
        """``.npy`` bytes (dtype and shape included, no pickle) for storing next to a voice."""
        out = io.BytesIO()
        np.save(out, np.asarray(embedding, dtype=np.float32), allow_pickle=False)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> np.ndarray:
        """Inverse of :meth:`to_bytes`; refuses anything but a (256,) float32 array."""
        embedding = np.load(io.BytesIO(data), allow_pickle=False)
        if (
            not isinstance(embedding, np.ndarray)
            or embedding.dtype != np.float32
            or embedding.shape != (EMBEDDING_DIM,)
        ):
            raise ValueError("not a stored speaker embedding (expected a (256,) float32 .npy array)")
        return embedding

    def _load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._model is None:
                self._model = _load_voice_encoder()
            from resemblyzer import audio as audio_module

            return self._model, audio_module

    def _run(self, model: Any, wav: np.ndarray) -> Any:
        import torch

        with _torch_threads_lock:
            previous = torch.get_num_threads()
            torch.set_num_threads(self.num_threads)
            try:
                return model.embed_utterance(wav)
            finally:
                torch.set_num_threads(previous)


def _load_voice_encoder() -> Any:
    try:
        with warnings.catch_warnings():
            # webrtcvad (a resemblyzer dependency) imports pkg_resources, which warns that it is deprecated.
            warnings.filterwarnings("ignore", message=".*pkg_resources.*", category=UserWarning)
            from resemblyzer import VoiceEncoder
    except ImportError as e:
        raise ImportError(f"{e}; {INSTALL_HINT}") from e
    model = VoiceEncoder("cpu", verbose=False)
    model.eval()
    return model


class EmbeddingCache:
    """A thread-safe LRU of embeddings by voice id; concurrent misses for one id compute it once.

    ``computations`` counts loader calls, so tests (and metrics) can see that a voice was embedded once.
    Cached arrays are made read-only: every caller shares them.
    """

    def __init__(self, maxsize: int = 256) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.computations = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, Future[np.ndarray]] = {}

    def get_or_compute(self, voice_id: str, loader: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached embedding, or ``loader()``'s result (cached); a loader error reaches every waiter."""
        with self._lock:
            if voice_id in self._items:
                self._items.move_to_end(voice_id)
                return self._items[voice_id]
            pending = self._pending.get(voice_id)
            owner = pending is None
            if pending is None:
                pending = self._pending[voice_id] = Future()
                self.computations += 1
        if not owner:
            return pending.result()
        try:
            value = np.asarray(loader())
            value.flags.writeable = False
        except BaseException as e:
            with self._lock:
                if self._pending.get(voice_id) is pending:
                    del self._pending[voice_id]
            pending.set_exception(e)
            raise
        with self._lock:
            if self._pending.get(voice_id) is pending:  # not invalidated meanwhile
                del self._pending[voice_id]
                self._items[voice_id] = value
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
        pending.set_result(value)
        return value

    def invalidate(self, voice_id: str) -> None:
        """Forget a voice (deleted or re-uploaded); a computation in flight for it is not cached."""
        with self._lock:
            self._items.pop(voice_id, None)
            self._pending.pop(voice_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
