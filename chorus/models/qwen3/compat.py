"""Import ``qwen_tts`` (PyPI ``qwen-tts`` 0.1.1) without the packages that only its unused paths need.

``import qwen_tts`` always runs the package ``__init__``, which loads the 25 Hz tokenizer code and the
inference wrappers too. Those import ``torchaudio.compliance.kaldi``, ``sox`` and ``librosa`` at module
level, although the 12 Hz models that chorus serves never call them, except one: the Base model's speaker
encoder builds its mel filterbank with ``librosa.filters.mel``. PyPI torchaudio does not import against
the torch we pin, and librosa drags in numba/llvmlite, so :func:`import_qwen_tts` puts small stand-ins
into ``sys.modules`` for whichever of these modules is not installed (a real installation always wins):

* ``librosa.filters.mel`` is a real numpy port of librosa's mel filterbank (Slaney scale and norm by
  default, HTK optional), so speaker embeddings are computed exactly as with librosa;
* ``librosa.load`` / ``librosa.resample`` raise a clear error: chorus decodes and resamples reference
  audio itself (with soxr) and hands qwen_tts 24 kHz float32 arrays, for which qwen_tts never calls them;
* ``torchaudio``, ``torchaudio.compliance(.kaldi)`` and ``sox`` are empty (only the 25 Hz tokenizer uses them);
* ``soundfile`` and ``einops`` get stand-ins only if missing (qwen-tts is installed with ``--no-deps``).

It also makes the Hugging Face libraries offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, set with
``setdefault`` so that an explicit setting wins): chorus only ever loads local folders.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import logging
import os
import sys
import threading
import warnings
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

INSTALL_HINT = (
    "the Qwen3-TTS backend needs torch, transformers and qwen-tts; install them with scripts/install_qwen.sh "
    "(pip install torch==2.13.0 && pip install transformers==4.57.3 accelerate==1.12.0 einops soundfile "
    "safetensors && pip install --no-deps qwen-tts==0.1.1)"
)
# Stubbed module names, in import order (parents before children), and the stub builders below.
STUBBED_MODULES = (
    "torchaudio",
    "torchaudio.compliance",
    "torchaudio.compliance.kaldi",
    "sox",
    "librosa",
    "librosa.filters",
    "soundfile",
    "einops",
)
STUB_MARKER = "__chorus_stub__"

logger = logging.getLogger(__name__)
_lock = threading.Lock()


def set_offline_env() -> None:
    """Keep huggingface_hub / transformers off the network (must run before they are first imported)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")


def missing_requirements() -> list[str]:
    """The pip names of the required packages that are not installed (empty when the backend can load)."""
    names = {"torch": "torch", "transformers": "transformers", "qwen_tts": "qwen-tts", "accelerate": "accelerate"}
    return [pip for mod, pip in names.items() if importlib.util.find_spec(mod) is None]


def import_qwen_tts() -> ModuleType:
    """Import and return the ``qwen_tts`` package, stubbing only the optional modules that are not installed.

    Raises ``ImportError`` (with the install command) if torch, transformers or qwen-tts is missing.
    """
    set_offline_env()
    with _lock:
        if "qwen_tts" in sys.modules:
            return sys.modules["qwen_tts"]
        missing = missing_requirements()
        if missing:
            raise ImportError(f"{', '.join(missing)} not installed: {INSTALL_HINT}")
        # Import the real heavy dependencies first, so that their own optional-import probes (transformers
        # checks e.g. whether torchaudio is installed) run before any stub is in sys.modules.
        importlib.import_module("torch")
        importlib.import_module("transformers")
        install_stubs()
        # The 25 Hz tokenizer prints a flash-attn banner to stdout on import; it concerns code chorus never runs.
        printed = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            try:
                module = importlib.import_module("qwen_tts")
            except ImportError as e:
                raise ImportError(f"importing qwen_tts failed ({e}); {INSTALL_HINT}") from e
        if printed.getvalue().strip():
            logger.debug("qwen_tts import printed: %s", printed.getvalue().strip())
        return module


def load_qwen3(path: str | os.PathLike[str], *, device: str = "cpu", dtype: Any = None) -> Any:
    """Load a Qwen3-TTS model folder (real or tiny) as a ``qwen_tts.Qwen3TTSModel``, offline.

    ``dtype`` is a torch dtype (None: float32). The folder needs what ``Qwen3TTSModel.from_pretrained`` reads:
    config.json + model.safetensors, generation_config.json, the Qwen2 tokenizer files, and speech_tokenizer/
    (config.json, model.safetensors, preprocessor_config.json).
    """
    folder = os.fspath(path)
    for required in ("config.json", os.path.join("speech_tokenizer", "config.json")):
        if not os.path.isfile(os.path.join(folder, required)):
            # (transformers would take a missing folder for a hub repo id and fail with a confusing error)
            raise FileNotFoundError(f"{folder}: not a Qwen3-TTS model folder (no {required})")
    qwen_tts = import_qwen_tts()
    import torch

    return qwen_tts.Qwen3TTSModel.from_pretrained(
        folder,
        device_map=str(device),
        dtype=torch.float32 if dtype is None else dtype,
        local_files_only=True,
    )


def install_stubs() -> list[str]:
    """Put stand-ins into ``sys.modules`` for the optional modules that are not installed; returns their names."""
    installed: list[str] = []
    for name in STUBBED_MODULES:
        if name in sys.modules:
            continue
        top = name.partition(".")[0]
        top_module = sys.modules.get(top)
        if top_module is None and importlib.util.find_spec(top) is not None:
            continue  # really installed: leave it alone (it is imported normally when needed)
        if top_module is not None and not getattr(top_module, STUB_MARKER, False):
            continue  # the real package is already imported; its submodules import normally
        module = _make_stub(name)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        installed.append(name)
    return installed


def _make_stub(name: str) -> ModuleType:
    is_package = name in {"torchaudio", "torchaudio.compliance", "librosa"}
    module = ModuleType(name, f"chorus stand-in for {name} (not installed; see chorus.models.qwen3.compat)")
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=is_package)
    if is_package:
        module.__path__ = []
    attributes: dict[str, Any] = {STUB_MARKER: True}
    if name == "librosa":
        attributes["load"] = _unavailable("librosa.load", "decode the audio yourself and pass (waveform, sample_rate)")
        attributes["resample"] = _unavailable("librosa.resample", "resample to 24 kHz before handing audio to qwen_tts")
    elif name == "librosa.filters":
        attributes["mel"] = mel_filterbank
    elif name == "soundfile":
        attributes["read"] = attributes["write"] = _unavailable("soundfile", "pip install soundfile")
    elif name == "einops":
        attributes["rearrange"] = attributes["repeat"] = _unavailable("einops", "pip install einops")
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _unavailable(what: str, advice: str) -> Any:
    def fail(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(f"{what} is not available (chorus stand-in; the package is not installed): {advice}")

    fail.__name__ = what.rpartition(".")[2]
    return fail


# --- librosa.filters.mel, ported to numpy (librosa 0.10: filters.mel, core.convert.hz_to_mel/mel_to_hz) ---


def hz_to_mel(frequencies: npt.ArrayLike, *, htk: bool = False) -> npt.NDArray[np.float64]:
    f = np.asanyarray(frequencies, dtype=np.float64)
    if htk:
        return np.asarray(2595.0 * np.log10(1.0 + f / 700.0))
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.asarray(
        np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)
    )


def mel_to_hz(mels: npt.ArrayLike, *, htk: bool = False) -> npt.NDArray[np.float64]:
    m = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return np.asarray(700.0 * (10.0 ** (m / 2595.0) - 1.0))
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.asarray(np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs))


def mel_filterbank(
    *,
    sr: float,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
    dtype: npt.DTypeLike = np.float32,
) -> npt.NDArray[Any]:
    """``librosa.filters.mel``: a (n_mels, 1 + n_fft // 2) matrix of triangular mel filters."""
    if fmax is None:
        fmax = float(sr) / 2
    if norm not in (None, "slaney"):
        raise NotImplementedError(f"mel filterbank norm={norm!r} (only 'slaney' or None)")
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels + 2), htk=htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    # Same arithmetic and dtype steps as librosa (rows cast to `dtype`, then normalised in place).
    weights = np.zeros((n_mels, len(fftfreqs)), dtype=dtype)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights
