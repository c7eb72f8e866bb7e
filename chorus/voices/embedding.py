"""Speaker embeddings: resemblyzer's GE2E d-vectors (256-d), computed with onnxruntime (chorus.voices.ge2e).

They answer "does this sound like that speaker?" — to check a cloned voice against its reference, to
spot duplicate uploads of one voice — without running a TTS model. The network and its weights ship in the
package and run without torch, so every install can register voices; the embeddings equal resemblyzer's
(cosine 1.0 in tests/voices/test_ge2e.py), so its published numbers carry over. The model loads on first use.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from chorus.voices.ge2e import EMBEDDING_DIM, Ge2eOnnx
from chorus.voices.ge2e import SAMPLE_RATE as ENCODER_SAMPLE_RATE

__all__ = ["EMBEDDING_DIM", "ENCODER_SAMPLE_RATE", "EmbeddingCache", "SpeakerEncoder"]


class SpeakerEncoder:
    """Embeds speech as a unit-length float32 vector; thread-safe."""

    def __init__(self) -> None:
        self._model: Ge2eOnnx | None = None
        self._load_lock = threading.Lock()

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float audio at any rate → (256,) float32, L2-normalised. Raises ValueError for unusable audio."""
        return self._load().embed(audio, sample_rate)

    def warm_up(self) -> None:
        """Load the model and run it once (the first run allocates)."""
        rng = np.random.default_rng(0)
        self.embed((0.1 * rng.standard_normal(ENCODER_SAMPLE_RATE)).astype(np.float32), ENCODER_SAMPLE_RATE)

    def _load(self) -> Ge2eOnnx:
        with self._load_lock:
            if self._model is None:
                self._model = Ge2eOnnx()
            return self._model

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
