"""Settings: one object, read from a YAML file and ``CHORUS_*`` environment variables, passed down.

Environment variables override the file; nested keys use ``__`` (``CHORUS_WORKER__MAX_SLOTS=32``).
The keys of vTTS's config (``model.name``, ``model.device``, ``model.local_path``,
``worker.emit_every_frames``, ``worker.max_slots``, ``worker.max_frames``) are accepted as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from chorus.errors import ConfigError
from chorus.store.settings import StoreConfig


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "chorus"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloneVoiceConfig(_Section):
    """A cloned voice for a Qwen3-TTS Base model, from a reference recording the operator provides."""

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    ref_audio: Path
    # The exact transcript of ref_audio (ICL cloning); without it, speaker-embedding-only cloning.
    ref_text: str | None = None
    language: str = "auto"


class ModelConfig(_Section):
    # "piper" = the bundled CPU voice (default); a path to another Piper .onnx goes in local_path.
    # "qwen3" (or any name) with local_path = a Qwen3-TTS folder (HF layout) selects the Qwen3-TTS backend.
    name: str = "piper"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    local_path: Path | None = None
    # CPU workers running the model's slots in parallel; None = one per core.
    num_workers: int | None = Field(default=None, ge=1, le=256)
    # Qwen3-TTS: weights dtype (auto = bfloat16 on cuda, float32 on cpu) and KV-cache positions per slot.
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = "auto"
    # Lossy speed-ups of the model's weights (Piper: an int8 HiFi-GAN decoder). Off by default: an option is
    # only offered once it passed the audio-quality gate (``chorus bench-quality``; README has its figures).
    quantization: Literal["none", "int8"] = "none"
    max_seq_len: int = Field(default=4096, ge=64, le=65_536)
    voices: list[CloneVoiceConfig] = Field(default_factory=list)
    # Fine-tuned (LoRA) voices held on the device at once; the least recently used is evicted for a cold one.
    max_adapters: int = Field(default=16, ge=1, le=4096)


class WorkerConfig(_Section):
    # Frames per emitted chunk once a stream runs (Piper: 11.6 ms latent frames; Qwen3: 80 ms codec frames).
    # None = the backend's default.
    emit_every_frames: int | None = Field(default=None, ge=1, le=10_000)
    # Frames in a stream's first chunk: small, for fast first audio. None = the backend's default.
    first_emit_frames: int | None = Field(default=None, ge=1, le=10_000)
    # Largest chunk a stream grows to once it is ahead of its listener (chunks double from emit_every_frames up to
    # this; longer chunks waste less of the decoder's context). None = the backend's default.
    max_emit_frames: int | None = Field(default=None, ge=1, le=100_000)
    # Requests holding a slot at once. None = the backend's default (CPU Piper: 64; GPU AR models: 16).
    max_slots: int | None = Field(default=None, ge=1, le=4096)
    # Hard cap on generated frames per request for autoregressive backends (runaway guard).
    max_frames: int = Field(default=3600, ge=1)
    # continuous: requests join and leave at every step. static: a batch starts and finishes together.
    mode: Literal["continuous", "static"] = "continuous"
    # Compute budget of one step, in milliseconds per worker, on backends whose cost grows with the batch.
    step_budget_ms: float = Field(default=60.0, gt=0, le=10_000)
    # When compute is short, a newcomer's first audio is due this long after arrival; a running stream
    # that would run dry sooner goes first (an underrun is worse than a later first byte).
    first_audio_target_ms: float = Field(default=250.0, ge=0, le=60_000)
    # CPU: a stream's next audio is planned to leave the engine this long before its client would run dry (the
    # trip to the client: encoding, the event loop, the network).
    delivery_margin_ms: float = Field(default=100.0, ge=0, le=10_000)
    # CPU: a playing stream is kept up to this far ahead of its client besides, built from a quarter of the audio
    # it has sent (after 2 s of audio, 0.5 s ahead). Admission plans it, so a machine that slows for a moment (a
    # VM's noisy neighbour) eats into every stream's lead instead of making it run dry. 0 = just in time.
    lead_ms: float = Field(default=500.0, ge=0, le=10_000)
    # CPU (Linux): windows of streams already playing run on threads this much nicer than the rest while no other
    # process keeps the machine busy, so a newcomer's first window (and a stream about to run dry) gets a core before
    # them instead of time-sharing it (chorus.engine.pipeline). 0 = every live window at the same priority.
    playing_nice: int = Field(default=10, ge=0, le=19)
    # Admission control on CPU: streams generating at once are held to max_load x the real-time capacity
    # of the workers (measured online); newcomers beyond it wait in the queue instead of making every
    # running stream stutter. 0 = off (only max_slots applies). 0.95: 5 % of the cores are left for what the
    # model does not see (the extra lanes' threads time-sharing the cores); at 1.0 the overload bench let 3-9
    # streams run dry, at 0.95 none (issue #9's note).
    max_load: float = Field(default=0.95, ge=0, le=16)
    # A backend step still running after this many seconds is a stall (a hung kernel or native deadlock): every
    # request fails with 503 engine_stalled, /health turns 503, and chorus serve exits (code 70) for its
    # supervisor to restart it. 0 = no watchdog.
    stall_timeout_s: float = Field(default=60.0, ge=0, le=3600)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Waiting requests beyond this are refused with 429 + Retry-After.
    queue_limit: int = Field(default=256, ge=0)
    # Wall-clock budget of one request from arrival to its last chunk, queueing included.
    request_timeout_s: float = Field(default=600.0, gt=0)
    max_input_chars: int = Field(default=4096, ge=1, le=100_000)
    # A request whose predicted wait for a slot exceeds this (or its own ``timeout``) is refused at once with
    # 429 + Retry-After instead of waiting to fail.
    max_queue_wait_s: float = Field(default=10.0, gt=0, le=3600)
    # Output sample rate of every response format (OpenAI's pcm is 24 kHz s16le mono).
    output_sample_rate: int = Field(default=24_000, ge=8000, le=48_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # SIGTERM: /ready turns 503 and new work gets 503 + Retry-After at once; requests in flight get this long to
    # finish; then the server exits 0 (give the orchestrator's terminationGracePeriodSeconds a few more).
    drain_timeout_s: float = Field(default=30.0, ge=0, le=3600)
    # An idle server synthesises a short canary line this often, so chorus_last_good_synthesis_timestamp_seconds
    # stays fresh while nobody speaks (0 = off).
    canary_interval_s: float = Field(default=60.0, ge=0, le=86_400)
    # Replicas sharing one database publish their queues this often (GET /v1/fleet, fleet-wide queue positions,
    # Retry-After from the whole fleet); a replica silent for 3 beats is taken for dead (0 = off).
    fleet_heartbeat_s: float = Field(default=2.0, ge=0, le=60)
    # /metrics alone, without a key, on this port of server.host (for Prometheus; let only it reach the port).
    # null = /metrics only on the API port (an admin key where keys are required).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # glibc only: allocations of this many KiB or more get a mapping of their own, returned to the kernel when
    # freed (chorus.server.malloc). Fixed, glibc no longer raises it as big blocks are freed, which let audio
    # buffers fragment its heaps (~80 MiB more resident in the soak bench). null = glibc's moving default.
    malloc_mmap_threshold_kib: int | None = Field(default=128, ge=1, le=32_768)
    # glibc only: hand the free pages inside malloc's heaps back to the kernel this often (malloc_trim; a few ms
    # off the event loop). Without it, pages freed between live chunks stay resident (0 = off).
    malloc_trim_interval_s: float = Field(default=30.0, ge=0, le=86_400)


class AuthConfig(_Section):
    # auto: keyless on a loopback bind (every caller is the default tenant), API keys required on any other
    # bind; required: always; off: never (behind a gateway that authenticates).
    mode: Literal["auto", "required", "off"] = "auto"


class SafetyConfig(_Section):
    # The audit trail keeps rows this long; older ones are purged daily, leaving a checkpoint row so the rest of
    # the chain still verifies (chorus audit verify).
    audit_retention_days: float = Field(default=90.0, gt=0, le=36_500)
    # A cloned voice needs the speaker's spoken consent (POST /v1/audio/voice_consents); off only for a server
    # whose every reference clip is already consented outside chorus.
    require_consent: bool = True
    # How long a consent challenge's phrase may be recorded against (seconds).
    challenge_ttl_s: float = Field(default=120.0, gt=0, le=3600)
    # The least speaker-embedding similarity (GE2E cosine) between the consent recording and the reference clip
    # for the same speaker: calibrated by `chorus bench-consent` (README, "Spoken consent").
    consent_speaker_threshold: float = Field(default=0.75, ge=0.0, le=1.0)
    # The secret key of the watermark every output carries (hex, or any passphrase). Unset: the server makes one
    # and keeps it in its database (shared by every replica on it); the library keeps one in data_dir.
    watermark_key: SecretStr | None = None


class LogConfig(_Section):
    # json: one JSON object per line (request id on every line of a request); text: for a terminal.
    format: Literal["json", "text"] = "json"
    # Logs never carry input text unless this is on (it may be personal data): then each speech request's text
    # is logged once, with its request id.
    include_text: bool = False


class JobsConfig(_Section):
    # Run batch jobs' items in this server (off: only accept and store jobs, for a server that leaves the work
    # to other replicas).
    enabled: bool = True
    # Items one server synthesises at once, in the background, below every live request.
    concurrency: int = Field(default=1, ge=1, le=64)
    max_items: int = Field(default=1000, ge=1, le=100_000)
    # A worker renews its item's lease every third of this; a dead worker's items are taken after it.
    lease_s: float = Field(default=30.0, ge=1, le=3600)
    # An item whose workers died this many times while on it fails (it may be what kills them).
    max_attempts: int = Field(default=3, ge=1, le=100)


class RealtimeConfig(_Section):
    """Voice-agent sessions (``WS /v1/audio/speech/stream``): when buffered text is ready to speak."""

    # An utterance's first segment may end at a clause mark (, ; :) once it has this many words (early audio).
    first_min_words: int = Field(default=3, ge=1, le=100)
    # Later segments end at a clause mark only with at least this many words (fewer, longer joins).
    min_words: int = Field(default=6, ge=1, le=200)
    # No punctuation in sight: speak after this many complete words.
    max_words: int = Field(default=20, ge=1, le=500)
    # No new text for this long: speak the complete words buffered.
    idle_s: float = Field(default=0.5, gt=0, le=60)
    # A session with no message and nothing to speak for this long is closed.
    session_idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # Text buffered and queued but not yet spoken, per session; more is refused (error, code text_buffer_full).
    max_buffered_chars: int = Field(default=20_000, ge=100, le=1_000_000)
    # Sessions one server holds at once; more are refused at connect (429 semantics: close code 1013).
    max_sessions: int = Field(default=256, ge=1, le=100_000)


class FinetuneConfig(_Section):
    """Datasets and fine-tune jobs (``/v1/datasets``, ``/v1/fine_tunes``, ``chorus worker --queue finetune``)."""

    # A dataset needs at least this much speech to be usable for training.
    min_dataset_minutes: float = Field(default=5.0, ge=0, le=100_000)
    max_dataset_bytes: int = Field(default=2 * 1024**3, ge=1024, le=1024**4)
    max_dataset_clips: int = Field(default=20_000, ge=1, le=1_000_000)
    # Clips of the dataset compared with the consent's speaker (evenly spread over the dataset).
    speaker_check_clips: int = Field(default=8, ge=1, le=1000)
    # A fine-tune job checkpoints every N steps (and on SIGTERM); a resumed job continues bit-identically.
    checkpoint_every: int = Field(default=50, ge=1, le=1_000_000)
    lease_s: float = Field(default=60.0, ge=1, le=3600)


class WebhooksConfig(_Section):
    # Hosts (names or IP literals) an admin trusts: they may use http and resolve to private addresses (an
    # in-cluster receiver). Every other webhook URL must be https to a public address.
    allow_hosts: list[str] = Field(default_factory=list)
    max_attempts: int = Field(default=8, ge=1, le=100)
    # Retry n waits a random time up to min(cap, base x 2^n) (exponential backoff, full jitter).
    backoff_base_s: float = Field(default=2.0, gt=0, le=3600)
    backoff_cap_s: float = Field(default=3600.0, gt=0, le=86_400)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # After a rotation the previous secret still signs (a second signature) this long.
    rotation_overlap_s: float = Field(default=86_400.0, ge=0, le=30 * 86_400)


class Settings(BaseSettings):
    """Everything chorus reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="CHORUS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    model: ModelConfig = Field(default_factory=ModelConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    # SQL database + blob root (default: SQLite and files under data_dir; PostgreSQL / S3 for scale-out).
    store: StoreConfig = Field(default_factory=StoreConfig)
    data_dir: Path = Field(default_factory=default_data_dir)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, so CHORUS_* overrides what the YAML file (passed as init values) says.
        return env_settings, init_settings


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{key}: {first['msg']}{shown}"


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings from ``path`` (YAML) and the environment; raise ConfigError naming the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
        data = loaded
    try:
        settings = Settings(**data)
        # Command-line flags (``section__key=value``) beat both the file and the environment.
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition("__")
            current = getattr(settings, section)
            updated = type(current).model_validate({**current.model_dump(), key: value})
            settings = settings.model_copy(update={section: updated})
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from e
    return settings
