"""chorus on Ray Serve: an ingress deployment in front of autoscaled engine replicas, voices multiplexed.

    CHORUS_CONFIG=/etc/chorus/chorus.yaml serve run chorus.deploy.ray_app:app    # or a KubeRay RayService:
    # serveConfigV2: applications: [{name: chorus, import_path: chorus.deploy.ray_app:app, route_prefix: /}]

``app`` is built at import from the YAML file named by ``CHORUS_CONFIG`` (chorus's defaults without it; ``CHORUS_*``
variables override either, as for ``chorus serve``) and the ``CHORUS_RAY_*`` variables of :class:`RayScaling`;
:func:`build_app` takes a config (path, mapping or ``Settings``) and a ``RayScaling`` directly. State lives in
chorus's store (``store:``: PostgreSQL + S3 for more than one node), so any replica serves any tenant.

**Split.** ``ChorusEngine`` (:mod:`chorus.deploy.ray_engine`) replicas each run the whole chorus app of
``chorus serve`` (engine, speech service, keys, voices, watermark, audit), built and started in the replica.
``ChorusIngress`` (:mod:`chorus.deploy.ray_ingress`) receives HTTP from Ray's proxy and forwards each request
(``POST /v1/audio/speech``, ``/health``, ``/ready``, ``/v1/models``, the voice and consent routes) to a replica,
whose chorus app answers it: the request and response contract, streaming, error JSON, API keys, per-key limits,
watermark and audit rows are chorus serve's own code, not a copy. The response streams back chunk by chunk
(a streaming handle call); a client that leaves cancels the call, and the replica's app sees the disconnect and
frees the slot.

**WebSocket.** Ray Serve handles carry one request and a stream of answers, not a stream of client messages, so
a session cannot be pinned to a replica for its life. The session therefore runs on the ingress, with chorus's
own session code (``chorus.server.routes.realtime.serve_session`` and ``chorus.agent.session``), and each segment
it speaks is one streaming call to an engine replica (``ChorusEngine.speak``): a segment's deadline (``plays_at``)
travels as a delay, its audio comes back as the engine's outputs (already watermarked), and the audit row is
written on the ingress, which sees the bytes delivered. Segments are independent requests to the engine anyway
(the ingress crossfades their seams), so a session spreads over replicas as load requires; those of a cloned
voice go where that voice is held.

**Multiplexing.** A cloned or fine-tuned voice's id is the multiplexed model id (``serve.multiplexed``): the
ingress resolves the request's voice name to its id (one indexed lookup) and calls the replica with
``.options(multiplexed_model_id=voice_id)``; Ray's router prefers a replica that holds it, so its conditioning
(a conversion model, prompt features, an adapter) is loaded once per replica, and at most ``max_voices`` per
replica stay loaded (least recently used leaves). Built-in voices carry no model id: every replica holds them, and
pinning them would send all of their traffic to one replica until it is full.

**Autoscaling** is on queue depth: Ray counts a replica's ongoing requests (synthesising or waiting in its chorus
queue) plus those waiting at the handles, and keeps the mean per replica near ``target_ongoing_requests``, which
defaults to the engine's slots (``worker.max_slots``; 16 when unset). Below that a replica has free slots and more
replicas only cost memory; above it requests wait for a slot and first audio comes later, so a replica is added.
``max_ongoing_requests`` (twice the target) lets a replica hold one slot's worth of queue, where chorus's admission
control still refuses what cannot start in time (429); beyond it requests wait at the handle for a new replica. On
a CPU the useful target is what the cores sustain in real time, which may be fewer than the slots: set
``worker.max_slots`` (or ``CHORUS_RAY_TARGET_ONGOING``) from ``chorus bench``.

**Not carried over from chorus serve.** The other routes (``/v1/tts/*``, jobs, datasets, fine-tunes, verify,
``/metrics``, ``/v1/stats``, ``/v1/requests/{id}``, the playground) are not routed: their per-process state (a
replica's metrics, a request queued on one replica) would answer from whichever replica the call landed on; run
``chorus serve`` or ``chorus worker`` beside it for jobs and fine-tunes, and scrape replicas directly. Per-key
concurrency limits count per engine replica. Word timestamps on the WebSocket are spread over each segment's audio
(the phonemizer is on the replicas), as on Qwen3; over HTTP they are exact. ``server.host/port`` are Ray's
(``http_options``); ``auth.mode: auto`` still reads ``server.host``: set ``auth.mode: required`` in a cluster.
A replica lost mid-response ends that response early (no error event). Keys are checked on the ingress too, for
the voice lookup (the replica's check is the one that answers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from chorus.config import Settings, load_settings
from chorus.deploy.ray_engine import ChorusEngine
from chorus.deploy.ray_ingress import ChorusIngress

DEFAULT_TARGET_SLOTS = 16  # the engine's default on a GPU (Piper's CPU default, 64, is more than cores sustain)


@dataclass(frozen=True, slots=True)
class RayScaling:
    """How many replicas, and what each asks of Ray's scheduler."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float | None = None  # None: the engine's slots
    max_voices: int = 32  # cloned voices one replica holds loaded (LRU)
    num_cpus: float = 1.0  # per engine replica
    num_gpus: float = 0.0  # per engine replica (1 for a Qwen3 replica on its own GPU)
    ingress_replicas: int = 1
    ingress_cpus: float = 0.5
    upscale_delay_s: float = 10.0  # queues of speech grow fast; a Piper replica is up in seconds
    downscale_delay_s: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RayScaling:
        """``CHORUS_RAY_MIN_REPLICAS``, ``_MAX_REPLICAS``, ``_TARGET_ONGOING``, ``_MAX_VOICES``, ``_NUM_CPUS``,
        ``_NUM_GPUS``, ``_INGRESS_REPLICAS``."""
        env = os.environ if env is None else env
        base = cls()

        def num(name: str, default: float | None) -> float | None:
            raw = env.get(f"CHORUS_RAY_{name}")
            return default if raw is None or not raw.strip() else float(raw)

        target = num("TARGET_ONGOING", base.target_ongoing_requests)
        return cls(
            min_replicas=int(num("MIN_REPLICAS", base.min_replicas) or 0),
            max_replicas=int(num("MAX_REPLICAS", base.max_replicas) or 1),
            target_ongoing_requests=target,
            max_voices=int(num("MAX_VOICES", base.max_voices) or 1),
            num_cpus=float(num("NUM_CPUS", base.num_cpus) or 0.0),
            num_gpus=float(num("NUM_GPUS", base.num_gpus) or 0.0),
            ingress_replicas=int(num("INGRESS_REPLICAS", base.ingress_replicas) or 1),
        )

    def target(self, settings: Settings) -> float:
        if self.target_ongoing_requests is not None:
            return self.target_ongoing_requests
        return float(settings.worker.max_slots or DEFAULT_TARGET_SLOTS)


def settings_from(config: str | Path | Mapping[str, Any] | Settings | None) -> Settings:
    """A chorus config: a YAML path, a mapping of its sections, a ``Settings``, or None (defaults)."""
    if isinstance(config, Settings):
        return config
    if config is None or isinstance(config, str | Path):
        return load_settings(config)
    return Settings(**dict(config))


def build_app(
    config: str | Path | Mapping[str, Any] | Settings | None = None, scaling: RayScaling | None = None
) -> Application:
    """The Ray Serve application for ``config``: ``serve.run(build_app(...))``."""
    settings = settings_from(config)
    scaling = scaling or RayScaling()
    target = scaling.target(settings)
    engine = serve.deployment(
        name="ChorusEngine",
        autoscaling_config={
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": target,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
        },
        max_ongoing_requests=max(1, round(2 * target)),
        ray_actor_options={"num_cpus": scaling.num_cpus, "num_gpus": scaling.num_gpus},
        # A replica builds the model and opens the store before it is healthy (Qwen3 weights take a while).
        health_check_timeout_s=60,
        graceful_shutdown_timeout_s=settings.server.drain_timeout_s + 5,
    )(ChorusEngine)
    ingress = serve.deployment(
        name="ChorusIngress",
        num_replicas=scaling.ingress_replicas,
        ray_actor_options={"num_cpus": scaling.ingress_cpus},
        max_ongoing_requests=max(1000, settings.realtime.max_sessions * 4),
    )(ChorusIngress)
    bound: Application = ingress.bind(settings, engine.bind(settings, scaling.max_voices))
    return bound


def _app_from_env() -> Application:
    return build_app(os.environ.get("CHORUS_CONFIG") or None, RayScaling.from_env())


app = _app_from_env()
