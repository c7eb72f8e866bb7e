"""Voices registered through the API on a Qwen3 Base model: cloning prompts, and fine-tuned voices' adapters.

A registered voice is its prompt item (speaker embedding, reference codes). A fine-tuned voice also carries the
LoRA adapter trained for it; its stored model is ``pack_lora``'s envelope (prompt + adapter). Parsed adapters stay
on the host for at most ``max_host_adapters`` voices (least recently used first out): a voice dropped here is
simply not loaded any more, and the voice service reads it from storage again on its next request, off the engine
thread. Which adapters are on the device is the pool's business (``lora.AdapterPool``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from chorus.models.cloning import voice_model
from chorus.models.qwen3.adapter import LoraAdapter, load_adapter
from chorus.models.qwen3.lora import AdapterPool
from chorus.models.qwen3.voice_prompt import decode_prompt


def pack_lora(lora_format: str, prompt: bytes, adapter: bytes) -> bytes:
    return voice_model.pack(lora_format, len(prompt).to_bytes(8, "little") + prompt + adapter)


class RegisteredVoices:
    def __init__(
        self,
        *,
        prompt_format: str,
        lora_format: str,
        digest: str,
        device: torch.device,
        dtype: torch.dtype,
        pool: AdapterPool,
        max_host_adapters: int,
    ) -> None:
        self.prompt_format, self.lora_format, self.digest = prompt_format, lora_format, digest
        self.device, self.dtype = device, dtype
        self.pool = pool
        self.max_host_adapters = max_host_adapters
        self._items: dict[str, list[Any]] = {}  # id → prompt items
        self._adapters: OrderedDict[str, LoraAdapter] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def load(self, voice_id: str, data: bytes) -> None:
        key = voice_id.lower()
        adapter = None
        if data.startswith(voice_model.MAGIC + self.lora_format.encode() + b"\n"):
            payload = voice_model.unpack(data, self.lora_format)
            size = int.from_bytes(payload[:8], "little")
            prompt = payload[8 : 8 + size]
            try:
                adapter = load_adapter(payload[8 + size :], base=self.digest)
            except ValueError as e:
                raise voice_model.VoiceModelFormatError(str(e)) from e
        else:
            prompt = voice_model.unpack(data, self.prompt_format)
        items = [decode_prompt(prompt, self.device, self.dtype)]
        with self._lock:
            self._items[key] = items
            self._adapters.pop(key, None)
            if adapter is not None:
                self._adapters[key] = adapter
                while len(self._adapters) > self.max_host_adapters:
                    dropped, _ = self._adapters.popitem(last=False)
                    self._items.pop(dropped, None)

    def has(self, voice_id: str) -> bool:
        with self._lock:
            return voice_id.lower() in self._items

    def get(self, voice_id: str) -> tuple[list[Any], LoraAdapter | None] | None:
        key = voice_id.lower()
        with self._lock:
            items = self._items.get(key)
            if items is None:
                return None
            adapter = self._adapters.get(key)
            if adapter is not None:
                self._adapters.move_to_end(key)
            return items, adapter

    def unload(self, voice_id: str) -> None:
        key = voice_id.lower()
        with self._lock:
            self._items.pop(key, None)
            had_adapter = self._adapters.pop(key, None) is not None
        if had_adapter:
            self.pool.evict(key)
