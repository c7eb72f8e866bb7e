"""The voice lifecycle behind the HTTP routes: register, list, get, delete, and resolve a name for synthesis.

Registration does the expensive work once: preprocess the upload, embed the speaker, build the backend's voice
model (a conversion model on Piper, prompt features on Qwen3-TTS Base), store everything (visible only when
complete), then install the model in the backend. A request for the voice later only looks the voice up; the
model is loaded from the store the first time a process uses the voice (after a restart, on another replica)
and rebuilt from the stored reference only when it was made for another backend.

Every method is blocking (SQL, blob store, DSP): the routes run them in worker threads.
"""

from __future__ import annotations

import io
import logging
import threading
import wave
from collections import Counter
from typing import Protocol

import numpy as np

from chorus.consent.service import ConsentService
from chorus.errors import ChorusError, InvalidRequestError, QueueFullError
from chorus.models.base import Backend, ReferenceVoice, VoiceCloner, VoiceInfo
from chorus.models.cloning import voice_model
from chorus.models.cloning.voice_model import FINE_TUNED_MARK, VoiceModelFormatError
from chorus.store.errors import VoiceExistsError, VoiceNotFoundError
from chorus.store.tables import VoiceRecord
from chorus.store.voices import MAX_NAME_LEN, VoiceStore, new_voice_id
from chorus.voices.catalog import OPENAI_VOICES, VoiceCatalog
from chorus.voices.embedding import EmbeddingCache, SpeakerEncoder
from chorus.voices.preprocess import ReferenceLimits, preprocess_reference

log = logging.getLogger(__name__)

VOICE_ID_PREFIX = "voice_"
MAX_REF_TEXT_CHARS = 2000
MAX_LANGUAGE_LEN = 32


class Embedder(Protocol):
    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


class CloningUnavailableError(ChorusError):
    """This server cannot register voices: its model speaks built-in voices only."""

    status_code = 501
    error_type = "not_implemented_error"


class VoiceService:
    def __init__(
        self,
        store: VoiceStore,
        catalog: VoiceCatalog,
        backend: Backend,
        *,
        encoder: Embedder,
        limits: ReferenceLimits | None = None,
        max_waiting_registrations: int = 4,
        consents: ConsentService | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.backend = backend
        self.cloner: VoiceCloner | None = backend if isinstance(backend, VoiceCloner) else None
        self.encoder = encoder
        self.limits = limits or ReferenceLimits()
        self.embeddings = EmbeddingCache()
        # Spoken consent (None: a process without it, e.g. a test of the lifecycle alone; nothing is required).
        self.consents = consents
        # Work done per voice, by kind ("built", "loaded", "rebuilt", "embedded"): tests prove nothing is redone.
        self.counts: Counter[str] = Counter()
        # Registrations run one at a time (each takes a core for a second or two); a few more may wait.
        self._register_lock = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._max_waiting = max_waiting_registrations
        self._load_locks: dict[str, threading.Lock] = {}
        self._load_locks_guard = threading.Lock()

    # -- registration ----------------------------------------------------------------------------

    def register(
        self,
        tenant_id: str,
        *,
        name: str,
        audio: bytes,
        ref_text: str | None,
        language: str | None,
        consent: str | None = None,
    ) -> VoiceRecord:
        """Validate everything cheap first, then do the work; nothing is stored unless all of it succeeds.
        ``consent``: the id of the speaker's recorded consent (403 without one when consent is required)."""
        name = self._check_name(name)
        ref_text = self._check_ref_text(ref_text)
        language = self._check_language(language)
        cloner = self.cloner
        if cloner is None or not cloner.can_clone:
            raise CloningUnavailableError(
                f"the {self.backend.name} backend cannot clone voices (a Qwen3-TTS CustomVoice checkpoint speaks "
                "its built-in speakers only; use a Base checkpoint or the Piper default)"
            )
        with self._waiting_lock:
            if self._waiting >= self._max_waiting:
                raise QueueFullError("too many voice registrations in progress; retry shortly", retry_after_s=5.0)
            self._waiting += 1
        try:
            with self._register_lock:
                return self._register(cloner, tenant_id, name, audio, ref_text, language, consent)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _register(
        self,
        cloner: VoiceCloner,
        tenant_id: str,
        name: str,
        data: bytes,
        ref_text: str | None,
        language: str,
        consent_id: str | None,
    ) -> VoiceRecord:
        # A name clash and a missing consent are cheap to find before the work (the store checks the name again,
        # atomically, when the voice turns ready; the consent is claimed atomically just before it is stored).
        if self.store.find_by_name(tenant_id, name) is not None:
            raise VoiceExistsError(f"a voice named {name!r} already exists", param="name")
        gate = self.consents
        consent = gate.admit(tenant_id, consent_id) if gate is not None else None
        ref = preprocess_reference(data, limits=self.limits)
        try:
            embedding = self.encoder.embed(ref.audio, ref.sample_rate)
        except ValueError as e:
            raise InvalidRequestError(
                f"no speaker could be measured in the audio sample: {e}", param="audio_sample"
            ) from e
        self.counts["embedded"] += 1
        if gate is not None and consent is not None:
            gate.check_speaker(consent, embedding)
        reference = ReferenceVoice("pending", np.asarray(ref.audio), ref.sample_rate, ref_text, language)
        try:
            model = cloner.build_voice(reference)
        except NotImplementedError as e:
            raise CloningUnavailableError(str(e)) from e
        except ValueError as e:
            raise InvalidRequestError(f"cannot build a voice from this sample: {e}", param="audio_sample") from e
        self.counts["built"] += 1
        voice_id = new_voice_id()
        if gate is not None and consent is not None:
            gate.claim(consent, voice_id)
        try:
            record = self.store.create(
                tenant_id,
                name,
                language,
                ref_text,
                original=data,
                processed=ref.processed_wav,
                embedding=SpeakerEncoder.to_bytes(embedding),
                duration_s=ref.duration_s,
                sample_rate=ref.sample_rate,
                conversion=model,
                voice_id=voice_id,
                consent_id=consent.id if consent is not None else None,
            )
        except BaseException:
            if gate is not None and consent is not None:
                gate.release(consent, voice_id)
            raise
        cloner.load_voice(record.id, model, language)
        self.embeddings.get_or_compute(record.id, lambda: embedding)
        log.info("registered voice %s (%r, tenant %s, %.1f s)", record.id, name, tenant_id, ref.duration_s)
        return record

    def _check_name(self, name: str) -> str:
        name = name.strip()
        if not name or len(name) > MAX_NAME_LEN:
            raise InvalidRequestError(f"name must be 1-{MAX_NAME_LEN} characters", param="name")
        if name.lower().startswith(VOICE_ID_PREFIX):
            raise InvalidRequestError(f"names starting with {VOICE_ID_PREFIX!r} are reserved for ids", param="name")
        if self._is_builtin_name(name):
            raise VoiceExistsError(f"{name!r} is the name of a built-in voice", param="name")
        if any(not c.isprintable() for c in name):
            raise InvalidRequestError("name must not contain control characters", param="name")
        return name

    @staticmethod
    def _check_ref_text(ref_text: str | None) -> str | None:
        if ref_text is None or not ref_text.strip():
            return None
        if len(ref_text) > MAX_REF_TEXT_CHARS:
            raise InvalidRequestError(f"ref_text is longer than {MAX_REF_TEXT_CHARS} characters", param="ref_text")
        return " ".join(ref_text.split())

    def _check_language(self, language: str | None) -> str:
        if language is None or not language.strip():
            return self.catalog.default.language or "auto"
        language = language.strip()
        if len(language) > MAX_LANGUAGE_LEN or not all(c.isalnum() or c in "-_" for c in language):
            raise InvalidRequestError("language must be a language code such as en, en_US or auto", param="language")
        return language

    # -- reading and deleting --------------------------------------------------------------------

    def list(self, tenant_id: str) -> list[VoiceRecord]:
        return self.store.list(tenant_id)

    def get(self, tenant_id: str, voice_id: str) -> VoiceRecord:
        return self.store.get(tenant_id, voice_id)

    def builtin(self, voice_id: str) -> VoiceInfo | None:
        key = voice_id.strip().lower()
        return next((v for v in self.catalog.list() if v.voice_id.lower() == key), None)

    def delete(self, tenant_id: str, voice_id: str) -> None:
        if self.builtin(voice_id) is not None:
            raise InvalidRequestError(f"{voice_id!r} is a built-in voice; only cloned voices can be deleted")
        self.store.delete(tenant_id, voice_id)
        if self.cloner is not None:
            self.cloner.unload_voice(voice_id)
        self.embeddings.invalidate(voice_id)

    def embedding(self, record: VoiceRecord) -> np.ndarray:
        """The voice's speaker embedding, read from the store once per process."""
        return self.embeddings.get_or_compute(
            record.id, lambda: SpeakerEncoder.from_bytes(self.store.read_blob(record, "embedding"))
        )

    # -- synthesis -------------------------------------------------------------------------------

    def builtin_id(self, name: str | None) -> str | None:
        """The engine's id for a built-in voice (id, name, OpenAI alias, or None for the default); else None.
        Needs no I/O, so the speech routes call it on the event loop before anything else."""
        if name is None or not name.strip() or self._is_builtin_name(name):
            return self.catalog.resolve(name).voice_id
        return None

    def resolve(self, tenant_id: str, name: str | None, *, param: str = "voice") -> str:
        """The engine's id for a built-in voice or one of the tenant's cloned voices (by id or name), with the
        cloned voice's model installed in the backend (loaded from the store the first time)."""
        builtin = self.builtin_id(name)
        if builtin is not None:
            return builtin
        assert name is not None  # builtin_id resolves None to the default voice
        record = self._find(tenant_id, name.strip(), param)
        self._ensure_loaded(record)
        return record.id

    def _is_builtin_name(self, name: str) -> bool:
        key = name.strip().lower()
        return key in OPENAI_VOICES or any(key in (v.voice_id.lower(), v.name.lower()) for v in self.catalog.list())

    def _find(self, tenant_id: str, name: str, param: str) -> VoiceRecord:
        if name.startswith(VOICE_ID_PREFIX):
            try:
                return self.store.get(tenant_id, name)
            except VoiceNotFoundError:
                pass
        record = self.store.find_by_name(tenant_id, name)
        if record is None:
            builtin = ", ".join(sorted(v.voice_id for v in self.catalog.list()))
            raise InvalidRequestError(
                f"unknown voice {name!r}: neither a built-in voice ({builtin}) nor a registered one "
                "(GET /v1/audio/voices lists them)",
                param=param,
            )
        return record

    def _ensure_loaded(self, record: VoiceRecord) -> None:
        cloner = self.cloner
        if cloner is None or not cloner.can_clone:
            raise CloningUnavailableError(f"the {self.backend.name} backend cannot speak cloned voices")
        if cloner.has_voice(record.id):
            return
        with self._load_lock(record.id):
            if cloner.has_voice(record.id):
                return
            stored = b""
            try:
                if record.conversion_key is None:
                    raise VoiceModelFormatError("the voice has no stored model")
                stored = self.store.read_blob(record, "conversion")
                cloner.load_voice(record.id, stored, record.language)
                self.counts["loaded"] += 1
            except VoiceModelFormatError as e:
                if FINE_TUNED_MARK in (voice_model.format_of(stored) or ""):  # its adapter cannot be rebuilt
                    raise CloningUnavailableError(
                        f"voice {record.id} was fine-tuned for another model checkpoint: {e}"
                    ) from e
                # Made for another backend (or an older method): rebuild from the stored reference, in memory.
                log.warning("voice %s: %s; rebuilding it from its reference audio", record.id, e)
                audio, rate = _read_wav(self.store.read_blob(record, "processed"))
                ref = ReferenceVoice(record.id, audio, rate, record.ref_text, record.language)
                cloner.load_voice(record.id, cloner.build_voice(ref), record.language)
                self.counts["rebuilt"] += 1

    def _load_lock(self, voice_id: str) -> threading.Lock:
        with self._load_locks_guard:
            return self._load_locks.setdefault(voice_id, threading.Lock())


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """The processed reference as stored (16-bit mono WAV) → float32."""
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0), rate
