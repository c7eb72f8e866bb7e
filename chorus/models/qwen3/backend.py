"""Qwen3-TTS (12 Hz; Base = cloning, CustomVoice = built-in speakers) behind chorus's engine.

Every running request advances by one codec frame per step, all of them in ONE batched talker forward
over a preallocated per-slot KV cache (``kvcache.py``), with the code predictor (codebooks 1..15) batched
across the same slots. What qwen-tts keeps as shared state (``rope_deltas``, one ``generation_step``, an
inner ``generate`` per step) is per slot here: position = the slot's own length, its own step counter
into its text rows, its own sampling parameters and RNG. Prompts come from the library itself
(``prompt.py``); the codec decodes each slot's new frames every ``emit_every_frames`` with left context.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chorus.audio.resample import resample
from chorus.models.base import ReferenceVoice, SlotState, SpeechInput, StepOutput, VoiceInfo
from chorus.models.qwen3.kvcache import SlotKVCache
from chorus.models.qwen3.prompt import PromptCapture, TalkerPrompt
from chorus.models.qwen3.sampling import RowSampling, repetition_penalty_, sample_rows
from chorus.models.qwen3.voice_prompt import checkpoint_digest, decode_prompt, encode_prompt
from chorus.voices import voice_model

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 12.5 frames per second
DEFAULT_FIRST_EMIT_FRAMES = 3
DEFAULT_EMIT_EVERY_FRAMES = 6
DECODE_CONTEXT_FRAMES = 25  # the library's own left context (chunked_decode)
MAX_CHUNK_FACTOR = 4
# Runaway guard besides max_frames: speech never needs this many frames per character of text.
FRAMES_PER_CHAR = 4.0
MIN_FRAME_BUDGET = 32


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


@dataclass(eq=False, slots=True)
class Qwen3Slot(SlotState):
    row: int = -1
    length: int = 0  # tokens in this slot's KV cache
    step: int = 0  # generation step: index into the trailing text rows
    trailing: torch.Tensor | None = None
    pad: torch.Tensor | None = None
    past_hidden: torch.Tensor | None = None  # [H] talker output at the last position
    code0: int = 0  # first codebook of the next frame, sampled at the previous step
    history: list[int] = field(default_factory=list)  # every sampled code0 (repetition penalty, min tokens)
    talker_sampling: RowSampling = field(default_factory=RowSampling)
    repetition_penalty: float = 1.05
    generator: torch.Generator | None = None
    pending: list[torch.Tensor] = field(default_factory=list)  # frames [16] not decoded yet
    context: list[torch.Tensor] = field(default_factory=list)  # last decoded frames (decoder left context)
    num_emits: int = 0
    frame_budget: int = 0
    frames: list[torch.Tensor] = field(default_factory=list)  # every frame (tests compare codes)


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
        self.voice_model_format = f"qwen3-prompt-1:{self.name}:{checkpoint_digest(Path(path))}"
        self._registered: dict[str, Any] = {}  # voices registered through the API: id → prompt items
        self.eos = int(tcfg.codec_eos_token_id)
        self.num_groups = int(tcfg.num_code_groups)
        vocab = int(tcfg.vocab_size)
        self._suppress = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self._suppress[vocab - 1024 :] = True
        self._suppress[self.eos] = False
        self.max_slots = max_slots or self.default_max_slots
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
        self.first_emit_frames = first_emit_frames or DEFAULT_FIRST_EMIT_FRAMES
        self.emit_every_frames = emit_every_frames or DEFAULT_EMIT_EVERY_FRAMES
        self.max_emit_frames = max(max_emit_frames or MAX_CHUNK_FACTOR * self.emit_every_frames, self.emit_every_frames)
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

    def load_voice(self, voice_id: str, data: bytes, language: str = "auto") -> None:
        item = decode_prompt(voice_model.unpack(data, self.voice_model_format), self.device, self.dtype)
        self._registered[voice_id.lower()] = [item]

    def has_voice(self, voice_id: str) -> bool:
        return voice_id.lower() in self._registered

    def unload_voice(self, voice_id: str) -> None:
        self._registered.pop(voice_id.lower(), None)

    # -- contract ---------------------------------------------------------------------------------

    def preprocess(self, inp: SpeechInput) -> Qwen3Input:
        p = inp.params
        language = (p.language or "auto").lower()
        voice = inp.voice_id.lower()
        context = None
        with torch.inference_mode():
            try:
                if self.kind == "custom_voice":
                    prompt = self._capture.capture(
                        lambda: self.tts.generate_custom_voice(
                            text=inp.text, speaker=voice, language=language, instruct=p.instructions or None
                        )
                    )
                elif self.kind == "base":
                    if voice in self._registered:
                        items = self._registered[voice]
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
        return Qwen3Input(prompt, context, min(budget, room))

    def prefill(self, inputs: Sequence[tuple[SpeechInput, Any]]) -> list[SlotState]:
        prepared = [p if isinstance(p, Qwen3Input) else self.preprocess(inp) for inp, p in inputs]
        if self._num_rows + len(prepared) > self.max_slots:
            raise RuntimeError("more requests than KV-cache rows")
        slots: list[Qwen3Slot] = []
        for (inp, _), prep in zip(inputs, prepared, strict=True):
            slot = self._new_slot(inp, prep)
            slots.append(slot)
        with torch.inference_mode():
            lengths = [prep.prompt.embeds.shape[0] for prep in prepared]
            longest = max(lengths)
            hidden_size = prepared[0].prompt.embeds.shape[1]
            x = torch.zeros(len(slots), longest, hidden_size, dtype=self.dtype, device=self.device)
            for i, prep in enumerate(prepared):
                x[i, : lengths[i]] = prep.prompt.embeds.to(self.dtype)
            positions = torch.arange(longest, device=self.device).expand(len(slots), -1)
            lens = torch.tensor(lengths, device=self.device)
            causal = torch.ones(longest, longest, dtype=torch.bool, device=self.device).tril()
            mask = (
                causal[None, None] & (torch.arange(longest, device=self.device)[None, :] < lens[:, None])[:, None, None]
            )
            rows = torch.tensor([s.row for s in slots], device=self.device)
            hidden = self._talker(x, rows, positions, mask, longest)
            last = hidden[torch.arange(len(slots)), lens - 1]
            code0 = self._sample_code0(self.talker.codec_head(last), slots)
        for i, slot in enumerate(slots):
            slot.length = lengths[i]
            slot.past_hidden = last[i]
            slot.code0 = int(code0[i])
            slot.history.append(slot.code0)
        return list(slots)

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        batch = [_as_qwen(s) for s in slots]
        with torch.inference_mode():
            frames, hidden = self._advance(batch)
            code0 = self._sample_code0(self.talker.codec_head(hidden), batch)
        for i, slot in enumerate(batch):
            slot.length += 1
            slot.step += 1
            slot.num_frames += 1
            slot.past_hidden = hidden[i]
            slot.pending.append(frames[i])
            if self.keep_frames:
                slot.frames.append(frames[i].cpu())
            slot.code0 = int(code0[i])
            slot.history.append(slot.code0)
            over = slot.num_frames >= slot.frame_budget or slot.length + 1 >= self.cache.max_len
            slot.is_finished = slot.code0 == self.eos or over
        audio = self._emit(batch)
        return [StepOutput(audio[i], 1, slot.is_finished) for i, slot in enumerate(batch)]

    def estimate_cost(self, slot: SlotState) -> float:
        return 0.0

    def flush(self, slot: SlotState) -> np.ndarray:
        s = _as_qwen(slot)
        s.is_finished = True
        return self._emit([s])[0]

    def release(self, slot: SlotState) -> None:
        s = _as_qwen(slot)
        if s.row < 0:
            return
        last = self._num_rows - 1
        moved = self._owner[last]
        if s.row != last and moved is not None:  # keep rows packed: the last row takes the freed one
            self.cache.move_row(last, s.row, moved.length)
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
        generator = torch.Generator(device=self.device)
        generator.manual_seed(p.seed if p.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        sampling = RowSampling(p.temperature, p.top_k, p.top_p)
        row = self._num_rows
        slot = Qwen3Slot(
            inp.request_id,
            row=row,
            trailing=prep.prompt.trailing.to(self.device, self.dtype),
            pad=prep.prompt.pad.to(self.device, self.dtype),
            talker_sampling=sampling,
            repetition_penalty=p.repetition_penalty,
            generator=generator,
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

    def _talker(
        self, x: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, read_len: int
    ) -> torch.Tensor:
        """The talker's layers over our cache: x [B, S, H] at per-slot positions [B, S]; returns normed [B, S, H]."""
        with self._timed("talker"):
            return self._talker_layers(x, rows, positions, mask, read_len)

    def _talker_layers(
        self, x: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, read_len: int
    ) -> torch.Tensor:
        self.cache.bind(rows, positions, read_len)
        model = self.talker.model
        position_embeddings = model.rotary_emb(x, positions[None].expand(3, -1, -1))
        h = x
        for layer in model.layers:
            out = layer(h, attention_mask=mask, past_key_values=self.cache, position_embeddings=position_embeddings)
            h = out[0] if isinstance(out, tuple) else out
        return model.norm(h)

    def _advance(self, batch: list[Qwen3Slot]) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame for every slot: codebooks 1..15 (batched), then one talker token per slot."""
        code0 = torch.tensor([s.code0 for s in batch], device=self.device)
        past = torch.stack([s.past_hidden for s in batch if s.past_hidden is not None])
        embed0 = self.talker.get_input_embeddings()(code0)  # [n, H]
        with self._timed("code_predictor"):
            rest = self._predict_codebooks(torch.stack([past, embed0], dim=1), batch)  # [n, 15]
        frames = torch.cat([code0[:, None], rest], dim=1)  # [n, 16]
        tables = self.predictor.get_input_embeddings()
        summed = embed0 + sum(tables[i](rest[:, i]) for i in range(self.num_groups - 1))
        text = torch.stack([_text_row(s) for s in batch])
        x = (summed + text)[:, None, :]
        lengths = torch.tensor([s.length for s in batch], device=self.device)
        read_len = int(lengths.max()) + 1
        mask = (torch.arange(read_len, device=self.device)[None, :] <= lengths[:, None])[:, None, None, :]
        rows = torch.tensor([s.row for s in batch], device=self.device)
        hidden = self._talker(x, rows, lengths[:, None], mask, read_len)[:, 0]
        return frames, hidden

    def _predict_codebooks(self, inputs: torch.Tensor, batch: list[Qwen3Slot]) -> torch.Tensor:
        """The code predictor, as the library's inner generate but batched over slots: [n, 2, H] → [n, 15]."""
        from transformers import DynamicCache

        cache = DynamicCache()
        sampling = [s.talker_sampling for s in batch]
        generators = [s.generator for s in batch]
        h = self.predictor.small_to_mtp_projection(inputs)
        codes = []
        for j in range(self.num_groups - 1):
            out = self.predictor.model(inputs_embeds=h, past_key_values=cache, use_cache=True)
            logits = self.predictor.lm_head[j](out.last_hidden_state[:, -1])
            code = sample_rows(logits.float(), sampling, generators)
            codes.append(code)
            if j < self.num_groups - 2:
                h = self.predictor.small_to_mtp_projection(self.predictor.get_input_embeddings()[j](code)[:, None, :])
        return torch.stack(codes, dim=1)

    def _sample_code0(self, logits: torch.Tensor, batch: list[Qwen3Slot]) -> torch.Tensor:
        logits = logits.float().clone()
        repetition_penalty_(logits, [s.history for s in batch], [s.repetition_penalty for s in batch])
        logits[:, self._suppress] = float("-inf")
        for i, s in enumerate(batch):
            if len(s.history) < 2:  # the library's min_new_tokens=2: no EOS among the first two codes
                logits[i, self.eos] = float("-inf")
        return sample_rows(logits, [s.talker_sampling for s in batch], [s.generator for s in batch])

    def _chunk_frames(self, slot: Qwen3Slot) -> int:
        """Frames in the slot's next chunk: short first, then emit_every_frames, doubling up to max_emit_frames
        (each chunk re-decodes DECODE_CONTEXT_FRAMES of context: longer chunks once the client has a buffer waste
        less codec work)."""
        if slot.num_emits == 0:
            return self.first_emit_frames
        return min(self.emit_every_frames << (slot.num_emits - 1), self.max_emit_frames)

    def _emit(self, batch: list[Qwen3Slot]) -> list[np.ndarray]:
        """Decode the pending frames of every slot whose chunk is due (or that finished), in ONE codec call.

        Each slot's codes are its last decoded frames (left context) then its new ones; shorter rows are padded
        on the right, which a causal decoder never looks at, so a slot's audio does not depend on its batch.
        """
        audio = [np.zeros(0, dtype=np.float32) for _ in batch]
        due = [
            i for i, s in enumerate(batch) if s.pending and (s.is_finished or len(s.pending) >= self._chunk_frames(s))
        ]
        if not due:
            return audio
        contexts = [batch[i].context[-DECODE_CONTEXT_FRAMES:] for i in due]
        rows = [torch.stack(ctx + batch[i].pending) for i, ctx in zip(due, contexts, strict=True)]  # [T_i, 16]
        longest = max(r.shape[0] for r in rows)
        codes = torch.zeros(len(rows), self.num_groups, longest, dtype=torch.long, device=self.device)
        for j, r in enumerate(rows):
            codes[j, :, : r.shape[0]] = r.T.long()
        with torch.inference_mode(), self._timed("codec"):
            wav = self.model.speech_tokenizer.model.decoder(codes)  # [k, 1, longest * 1920]
        wav = wav.reshape(len(rows), -1).float().clamp(-1, 1).cpu().numpy()
        for j, i in enumerate(due):
            slot, ctx = batch[i], contexts[j]
            start, end = len(ctx) * SAMPLES_PER_FRAME, rows[j].shape[0] * SAMPLES_PER_FRAME
            audio[i] = np.asarray(wav[j, start:end], dtype=np.float32)
            slot.context = (ctx + slot.pending)[-DECODE_CONTEXT_FRAMES:]
            slot.pending = []
            slot.num_emits += 1
        return audio


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
