"""Qwen3-TTS (12 Hz; Base = cloning, CustomVoice = built-in speakers) behind chorus's engine.

Every running request advances by one codec frame per step, all of them in ONE batched talker forward
over a preallocated per-slot KV cache (``kvcache.py``), with the code predictor (codebooks 1..15) batched
across the same slots. What qwen-tts keeps as shared state (``rope_deltas``, one ``generation_step``, an
inner ``generate`` per step) is per slot here: position = the slot's own length, its own step counter
into its text rows, its own sampling parameters and its own counter-based random stream (``sampling.py``:
a draw depends on the request's seed and position only, never on its batch). Prompts come from the library
itself (``prompt.py``); the codec decodes each slot's new frames every ``emit_every_frames`` with left context.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chorus.audio.resample import resample
from chorus.models.base import ReferenceVoice, SlotState, SpeechInput, StepOutput, VoiceInfo
from chorus.models.cloning import voice_model
from chorus.models.qwen3.adapter import LoraAdapter, load_adapter
from chorus.models.qwen3.chunks import DECODE_CONTEXT_FRAMES, SAMPLES_PER_FRAME, ChunkDecoder, ChunkSchedule
from chorus.models.qwen3.kvcache import SlotKVCache
from chorus.models.qwen3.lora import AdapterPool
from chorus.models.qwen3.predictor import CodePredictor
from chorus.models.qwen3.prompt import PromptCapture, TalkerPrompt
from chorus.models.qwen3.registered import RegisteredVoices, pack_lora
from chorus.models.qwen3.sampling import (
    BatchSampling,
    RowSampling,
    frame_counters,
    new_seed,
    repetition_penalty_,
    request_key,
    sample,
)
from chorus.models.qwen3.voice_prompt import checkpoint_digest, encode_prompt

SAMPLE_RATE = 24_000
# Runaway guard besides max_frames: speech never needs this many frames per character of text.
FRAMES_PER_CHAR = 4.0
MIN_FRAME_BUDGET = 32
MIN_NEW_FRAMES = 2  # the library's min_new_tokens: no EOS as the code 0 of frames 0 and 1


@dataclass(frozen=True, slots=True)
class CloneVoice:
    """A Base-model voice: reference audio (24 kHz mono float32) and, for ICL cloning, its exact transcript."""

    voice_id: str
    audio: np.ndarray
    ref_text: str | None = None
    language: str = "auto"


@dataclass
class Qwen3Input:
    prompt: TalkerPrompt
    context: torch.Tensor | None  # [T, 16] codes the decoder starts from (ICL reference), or None
    frame_budget: int
    adapter: tuple[str, LoraAdapter] | None = None  # a fine-tuned voice's LoRA adapter (parsed, on the host)


@dataclass(eq=False, slots=True)
class Qwen3Slot(SlotState):
    row: int = -1
    length: int = 0  # tokens in this slot's KV cache
    step: int = 0  # generation step: index into the trailing text rows
    trailing: torch.Tensor | None = None
    pad: torch.Tensor | None = None
    past_hidden: torch.Tensor | None = None  # [H] talker output at the last position
    code0: int = 0  # first codebook of the next frame, sampled at the previous step
    sampling: RowSampling = field(default_factory=RowSampling)
    key: int = 0  # the request's random stream (sampling.request_key of its seed)
    pending: list[torch.Tensor] = field(default_factory=list)  # frames [16] not decoded yet
    context: list[torch.Tensor] = field(default_factory=list)  # last decoded frames (decoder left context)
    num_emits: int = 0
    frame_budget: int = 0
    frames: list[torch.Tensor] = field(default_factory=list)  # every frame (tests compare codes)
    adapter: int = 0  # entry of its LoRA adapter in the device pool (0 = none)


class Qwen3Backend:
    is_compute_bound = False  # a GPU step costs about the same for 1 or 64 slots: every slot steps
    is_autoregressive = True
    num_workers = 1
    sample_rate = SAMPLE_RATE
    frame_seconds = SAMPLES_PER_FRAME / SAMPLE_RATE
    default_max_slots = 16

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        max_slots: int | None = None,
        max_len: int = 4096,
        first_emit_frames: int | None = None,
        emit_every_frames: int | None = None,
        max_emit_frames: int | None = None,
        clone_voices: Sequence[CloneVoice] = (),
        keep_frames: bool = False,
        max_adapters: int = 16,
    ) -> None:
        from chorus.models.qwen3.compat import load_qwen3

        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.tts = load_qwen3(path, device=str(self.device), dtype=self.dtype)
        self.model = self.tts.model
        self.talker = self.model.talker
        self.predictor = self.talker.code_predictor
        config = self.model.config
        tcfg = config.talker_config
        self.kind = str(config.tts_model_type)
        self.name = Path(path).name
        # Prompt features come from this checkpoint's speaker encoder and codec: they carry its identity.
        self.digest = checkpoint_digest(Path(path))
        self.voice_model_format = f"qwen3-prompt-1:{self.name}:{self.digest}"
        # A fine-tuned voice: the prompt of a reference clip plus the LoRA adapter trained for it (lora.py).
        self.lora_voice_format = f"qwen3{voice_model.FINE_TUNED_MARK}1:{self.name}:{self.digest}"
        self.adapters = AdapterPool.wrap(self.model, max_adapters)  # fine-tuned voices' LoRA on the device
        self._registered = RegisteredVoices(  # voices registered through the API
            prompt_format=self.voice_model_format,
            lora_format=self.lora_voice_format,
            digest=self.digest,
            device=self.device,
            dtype=self.dtype,
            pool=self.adapters,
            max_host_adapters=4 * max_adapters,
        )
        self.eos = int(tcfg.codec_eos_token_id)
        self.num_groups = int(tcfg.num_code_groups)
        vocab = int(tcfg.vocab_size)
        self._suppress = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self._suppress[vocab - 1024 :] = True
        self._suppress[self.eos] = False
        self.max_slots = max_slots or self.default_max_slots
        # Code-0 ids each KV row drew so far (repetition penalty), [max_slots, vocab]; moves with its row.
        self._seen = torch.zeros(self.max_slots, vocab, dtype=torch.bool, device=self.device)
        self._predictor = CodePredictor(self.predictor, max_slots=self.max_slots, dtype=self.dtype, device=self.device)
        head_dim = int(getattr(tcfg, "head_dim", tcfg.hidden_size // tcfg.num_attention_heads))
        self.cache = SlotKVCache(
            num_layers=int(tcfg.num_hidden_layers),
            max_slots=self.max_slots,
            kv_heads=int(tcfg.num_key_value_heads),
            head_dim=head_dim,
            max_len=max_len,
            dtype=self.dtype,
            device=self.device,
        )
        self._owner: list[Qwen3Slot | None] = [None] * self.max_slots  # rows 0..n-1 are in use, packed
        self._num_rows = 0
        schedule = ChunkSchedule.of(first_emit_frames, emit_every_frames, max_emit_frames)
        self.first_emit_frames = schedule.first_emit_frames
        self.emit_every_frames = schedule.emit_every_frames
        self.max_emit_frames = schedule.max_emit_frames
        self._chunks = ChunkDecoder(
            self.model.speech_tokenizer.model.decoder, schedule, num_groups=self.num_groups, device=self.device
        )
        self.keep_frames = keep_frames
        self._capture = PromptCapture(self.talker)
        self._speakers = sorted((getattr(tcfg, "spk_id", None) or {}).keys())
        self._clones: dict[str, tuple[CloneVoice, Any]] = {}
        # Benchmarks set this: seconds spent inside model forwards (talker, code predictor, codec), synchronised.
        self.forward_seconds: dict[str, float] | None = None
        for voice in clone_voices:
            self.add_clone_voice(voice)

    # -- voices ------------------------------------------------------------------------------------

    def voices(self) -> list[VoiceInfo]:
        builtin = [VoiceInfo(s, s, "auto", "Qwen3-TTS CustomVoice speaker") for s in self._speakers]
        clones = [VoiceInfo(v.voice_id, v.voice_id, v.language, "cloned (Base)") for v, _ in self._clones.values()]
        return builtin + clones or [VoiceInfo("default", "default", "auto", "no voice configured")]

    def add_clone_voice(self, voice: CloneVoice) -> None:
        """Compute a Base voice's prompt features (speaker embedding, reference codes) once, for every request."""
        if self.kind != "base":
            raise ValueError(f"voice cloning needs a Base checkpoint; this one is {self.kind!r}")
        with torch.inference_mode():
            items = self.tts.create_voice_clone_prompt(
                ref_audio=(np.asarray(voice.audio, dtype=np.float32), SAMPLE_RATE),
                ref_text=voice.ref_text,
                x_vector_only_mode=not voice.ref_text,
            )
        self._clones[voice.voice_id.lower()] = (voice, items)

    # -- registered voices (VoiceCloner) -------------------------------------------------------------

    @property
    def can_clone(self) -> bool:
        return self.kind == "base"

    def build_voice(self, voice: ReferenceVoice) -> bytes:
        """The Base model's own cloning prompt (speaker embedding, reference codes), computed once per voice."""
        if self.kind != "base":
            raise NotImplementedError(f"voice cloning needs a Base checkpoint; this one is {self.kind!r}")
        audio = resample(np.asarray(voice.audio, dtype=np.float32), voice.sample_rate, SAMPLE_RATE)
        with torch.inference_mode():
            (item,) = self.tts.create_voice_clone_prompt(
                ref_audio=(audio, SAMPLE_RATE), ref_text=voice.ref_text, x_vector_only_mode=not voice.ref_text
            )
        return voice_model.pack(self.voice_model_format, encode_prompt(item))

    def build_lora_voice(self, voice: ReferenceVoice, adapter: bytes) -> bytes:
        """A fine-tuned voice's model: the x-vector prompt of a reference clip and the adapter (checked here)."""
        load_adapter(adapter, base=self.digest)
        prompt = voice_model.unpack(self.build_voice(voice), self.voice_model_format)
        return pack_lora(self.lora_voice_format, prompt, adapter)

    def load_voice(self, voice_id: str, data: bytes, language: str = "auto") -> None:
        self._registered.load(voice_id, data)

    def has_voice(self, voice_id: str) -> bool:
        return self._registered.has(voice_id)

    def unload_voice(self, voice_id: str) -> None:
        self._registered.unload(voice_id)

    # -- contract ---------------------------------------------------------------------------------

    def preprocess(self, inp: SpeechInput) -> Qwen3Input:
        p = inp.params
        language = (p.language or "auto").lower()
        voice = inp.voice_id.lower()
        context = None
        registered = self._registered.get(voice)
        adapter = None
        with torch.inference_mode():
            try:
                if self.kind == "custom_voice":
                    prompt = self._capture.capture(
                        lambda: self.tts.generate_custom_voice(
                            text=inp.text, speaker=voice, language=language, instruct=p.instructions or None
                        )
                    )
                elif self.kind == "base":
                    if registered is not None:
                        items, lora = registered
                        adapter = None if lora is None else (voice, lora)
                    elif voice in self._clones:
                        _, items = self._clones[voice]
                    else:
                        raise ValueError(f"unknown voice {inp.voice_id!r} for this Base model")
                    prompt = self._capture.capture(
                        lambda: self.tts.generate_voice_clone(
                            text=inp.text, language=language, voice_clone_prompt=items
                        )
                    )
                    if items[0].ref_code is not None:
                        context = items[0].ref_code[-DECODE_CONTEXT_FRAMES:].to(self.device)
                else:
                    prompt = self._capture.capture(
                        lambda: self.tts.generate_voice_design(
                            text=inp.text, instruct=p.instructions or "", language=language
                        )
                    )
            except (NotImplementedError, KeyError) as e:
                raise ValueError(str(e)) from e
        room = self.cache.max_len - prompt.embeds.shape[0] - 1
        if room < 2:
            raise ValueError(f"the input is too long for this model's context ({self.cache.max_len} tokens)")
        budget = max(MIN_FRAME_BUDGET, math.ceil(len(inp.text) * FRAMES_PER_CHAR))
        return Qwen3Input(prompt, context, min(budget, room), adapter)

    def prefill(self, inputs: Sequence[tuple[SpeechInput, Any]]) -> list[SlotState]:
        prepared = [p if isinstance(p, Qwen3Input) else self.preprocess(inp) for inp, p in inputs]
        if self._num_rows + len(prepared) > self.max_slots:
            raise RuntimeError("more requests than KV-cache rows")
        slots: list[Qwen3Slot] = []
        try:
            for (inp, _), prep in zip(inputs, prepared, strict=True):
                adapter = 0 if prep.adapter is None else self.adapters.acquire(*prep.adapter)
                slot = self._new_slot(inp, prep)
                slot.adapter = adapter
                slots.append(slot)
        except Exception:
            for slot in slots:
                self.release(slot)
            raise
        with torch.inference_mode(), self.adapters.bind_rows([s.adapter for s in slots], self.device):
            lengths = [prep.prompt.embeds.shape[0] for prep in prepared]
            # Code 0 of each slot's frame 0: draw (key, frame 0, codebook 0).
            zeros = [0] * len(slots)
            last_positions = [n - 1 for n in lengths]
            tensors = self._batch_tensors(slots, frame_counters(zeros, [0]), last_positions, code0_frames=zeros)
            longest = max(lengths)
            hidden_size = prepared[0].prompt.embeds.shape[1]
            x = torch.zeros(len(slots), longest, hidden_size, dtype=self.dtype, device=self.device)
            for i, prep in enumerate(prepared):
                x[i, : lengths[i]] = prep.prompt.embeds.to(self.dtype)
            positions = torch.arange(longest, device=self.device).expand(len(slots), -1)
            last_index = tensors.positions  # [n] position of each prompt's last token
            causal = torch.ones(longest, longest, dtype=torch.bool, device=self.device).tril()
            valid = torch.arange(longest, device=self.device)[None, :] <= last_index[:, None]
            mask = causal[None, None] & valid[:, None, None]
            hidden = self._talker(x, tensors, positions, mask, longest)
            last = hidden[torch.arange(len(slots), device=self.device), last_index]
            self._seen[tensors.row_index] = False
            code0 = self._sample_code0(self.talker.codec_head(last), slots, tensors, draw=0)
        for slot, length, past, code in zip(slots, lengths, last, code0.tolist(), strict=True):
            slot.length = length
            slot.past_hidden = past
            slot.code0 = code
        return list(slots)

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        batch = [_as_qwen(s) for s in slots]
        with torch.inference_mode(), self.adapters.bind_rows([s.adapter for s in batch], self.device):
            # This step's draws: code 0 of each slot's next frame, then codebooks 1..15 of its current frame.
            current = [s.num_frames for s in batch]
            following = [f + 1 for f in current]
            counters = np.concatenate(
                [frame_counters(following, [0]), frame_counters(current, range(1, self.num_groups))], axis=1
            )
            tensors = self._batch_tensors(batch, counters, [s.length for s in batch], code0_frames=following)
            frames, hidden = self._advance(batch, tensors)
            code0 = self._sample_code0(self.talker.codec_head(hidden), batch, tensors, draw=0).tolist()
        for i, slot in enumerate(batch):
            slot.length += 1
            slot.step += 1
            slot.num_frames += 1
            slot.past_hidden = hidden[i]
            slot.pending.append(frames[i])
            if self.keep_frames:
                slot.frames.append(frames[i].cpu())
            slot.code0 = code0[i]
            over = slot.num_frames >= slot.frame_budget or slot.length + 1 >= self.cache.max_len
            slot.is_finished = slot.code0 == self.eos or over
        audio = self._chunks.emit(batch, lambda: self._timed("codec"))
        return [StepOutput(audio[i], 1, slot.is_finished) for i, slot in enumerate(batch)]

    def estimate_cost(self, slot: SlotState) -> float:
        return 0.0

    def flush(self, slot: SlotState) -> np.ndarray:
        s = _as_qwen(slot)
        s.is_finished = True
        return self._chunks.emit([s], lambda: self._timed("codec"))[0]

    def release(self, slot: SlotState) -> None:
        s = _as_qwen(slot)
        if s.row < 0:
            return
        if s.adapter:
            self.adapters.release(s.adapter)
            s.adapter = 0
        last = self._num_rows - 1
        moved = self._owner[last]
        if s.row != last and moved is not None:  # keep rows packed: the last row takes the freed one
            self.cache.move_row(last, s.row, moved.length)
            self._seen[s.row] = self._seen[last]
            moved.row = s.row
            self._owner[s.row] = moved
        self._owner[last] = None
        self._num_rows -= 1
        s.row = -1

    def close(self) -> None:
        pass

    # -- internals ------------------------------------------------------------------------------------

    def _new_slot(self, inp: SpeechInput, prep: Qwen3Input) -> Qwen3Slot:
        p = inp.params
        sampling = RowSampling(p.temperature, p.top_k, p.top_p, p.repetition_penalty)
        row = self._num_rows
        slot = Qwen3Slot(
            inp.request_id,
            row=row,
            trailing=prep.prompt.trailing.to(self.device, self.dtype),
            pad=prep.prompt.pad.to(self.device, self.dtype),
            sampling=sampling,
            key=request_key(p.seed if p.seed is not None else new_seed()),
            frame_budget=prep.frame_budget,
            context=list(prep.context) if prep.context is not None else [],
        )
        self._owner[row] = slot
        self._num_rows += 1
        return slot

    @contextlib.contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        if self.forward_seconds is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_seconds[part] = self.forward_seconds.get(part, 0.0) + time.perf_counter() - t0

    def _batch_tensors(
        self, batch: Sequence[Qwen3Slot], counters: np.ndarray, positions: list[int], code0_frames: list[int]
    ) -> _BatchTensors:
        """Every per-slot input of a prefill or step on the device, in two copies made before any kernel is queued
        (a copy from host memory waits for the device: one in the middle of a step would stall it). counters: the
        draws (``sampling.frame_counters``); code0_frames: the frame whose code 0 this call draws, per slot."""
        rows = [s.row for s in batch]
        no_eos = [int(f < MIN_NEW_FRAMES) for f in code0_frames]
        ints = torch.tensor([rows, [s.code0 for s in batch], positions, no_eos], dtype=torch.long).to(self.device)
        keys = [s.key for s in batch]
        return _BatchTensors(
            row_index=ints[0],
            is_packed=rows == list(range(len(rows))),
            code0=ints[1],
            positions=ints[2],
            no_eos=ints[3].bool(),
            sampling=BatchSampling.of([s.sampling for s in batch], keys, counters, self.device),
        )

    def _talker(
        self, x: torch.Tensor, tensors: _BatchTensors, positions: torch.Tensor, mask: torch.Tensor, read_len: int
    ) -> torch.Tensor:
        """The talker's layers over our cache: x [B, S, H] at per-slot positions [B, S]; returns normed [B, S, H]."""
        with self._timed("talker"):
            self.cache.bind(tensors.row_index, tensors.is_packed, positions, read_len)
            model = self.talker.model
            position_embeddings = model.rotary_emb(x, positions[None].expand(3, -1, -1))
            h = x
            for layer in model.layers:
                out = layer(h, attention_mask=mask, past_key_values=self.cache, position_embeddings=position_embeddings)
                h = out[0] if isinstance(out, tuple) else out
            return model.norm(h)

    def _advance(self, batch: list[Qwen3Slot], tensors: _BatchTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame for every slot: codebooks 1..15 (batched; draws 1..15), then one talker token per slot."""
        code0 = tensors.code0
        past = torch.stack([s.past_hidden for s in batch if s.past_hidden is not None])
        embed0 = self.talker.get_input_embeddings()(code0)  # [n, H]
        sampling = tensors.sampling
        with self._timed("code_predictor"):
            rest, embeds = self._predictor(
                torch.stack([past, embed0], dim=1), lambda j, logits: sample(logits, sampling, draw=j + 1)
            )  # [n, 15], [n, 15, H]
        frames = torch.cat([code0[:, None], rest], dim=1)  # [n, 16]
        # The library's sum over the 16 codebook embeddings, in its order, plus this step's text row.
        summed = torch.cat([embed0[:, None], embeds], dim=1).sum(1)
        text = torch.stack([_text_row(s) for s in batch])
        x = (summed + text)[:, None, :]
        read_len = max(s.length for s in batch) + 1
        position = tensors.positions  # = each slot's length: its new token goes there
        mask = (torch.arange(read_len, device=self.device)[None, :] <= position[:, None])[:, None, None, :]
        hidden = self._talker(x, tensors, position[:, None], mask, read_len)[:, 0]
        return frames, hidden

    def _sample_code0(
        self, logits: torch.Tensor, batch: Sequence[Qwen3Slot], tensors: _BatchTensors, draw: int
    ) -> torch.Tensor:
        """Code 0 of each slot's next frame: [n, vocab] logits → [n] ids (also marked as seen in its row)."""
        n = len(batch)
        logits = logits.float()
        if any(s.sampling.repetition_penalty != 1.0 for s in batch):
            seen = self._seen[:n] if tensors.is_packed else self._seen[tensors.row_index]
            logits = repetition_penalty_(logits, seen, tensors.sampling.repetition_penalty)
        logits = logits.masked_fill(self._suppress, float("-inf"))
        logits[:, self.eos].masked_fill_(tensors.no_eos, float("-inf"))
        code0 = sample(logits, tensors.sampling, draw)
        self._seen[tensors.row_index, code0] = True
        return code0


@dataclass(frozen=True, slots=True)
class _BatchTensors:
    """A batch's per-slot inputs on the device (see ``Qwen3Backend._batch_tensors``)."""

    row_index: torch.Tensor  # [n] KV row of each slot
    is_packed: bool  # rows are exactly 0..n-1: the caches are read as views
    code0: torch.Tensor  # [n] code 0 of each slot's current frame
    positions: torch.Tensor  # [n] position of the token whose output is used: the prompt's last, or the new one
    no_eos: torch.Tensor  # [n] bool: the code 0 drawn now may not be EOS (the library's min_new_tokens)
    sampling: BatchSampling


def _text_row(slot: Qwen3Slot) -> torch.Tensor:
    """The text row added to this step's input: the next trailing text token, then the pad row for ever."""
    if slot.trailing is not None and slot.step < slot.trailing.shape[0]:
        return slot.trailing[slot.step]
    if slot.pad is None:
        raise RuntimeError("slot has no conditioning (prefill did not run)")
    return slot.pad


def _as_qwen(slot: SlotState) -> Qwen3Slot:
    if not isinstance(slot, Qwen3Slot):
        raise TypeError(f"Qwen3Backend got a {type(slot).__name__}")
    return slot
