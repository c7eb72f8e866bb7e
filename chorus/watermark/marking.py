"""Every synthesis chorus delivers carries its watermark: how a request's audio is marked, and with what.

The key is one per deployment: ``safety.watermark_key`` when set, else a random key the server keeps in its
database (every replica on that database shares it; ``chorus.store.secrets``) or, for the library and the CLI
without a server, in ``{data_dir}/watermark.key``. The payload is 16 bits of the tenant's id (sha256), so a
clip found in the wild names its tenant (one in 65536 tenants share a payload; the audit trail, which records
every synthesis with its payload, settles it). The mark is applied to the backend's PCM as it streams, before
any resampling or encoding, so every route, format and stream carries the same mark, and a streamed response
equals the one-shot response of the same request sample for sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import SecretStr

from chorus.engine.request import RequestOutput
from chorus.watermark import FRAME_HZ, PAYLOAD_BITS, Detection, MarkStream, Watermarker, detect

KEY_FILE = "watermark.key"
# The most audio a request's marker holds back (two 20 ms hops): the engine plans deliveries that much earlier.
HOLD_BACK_S = 2 / FRAME_HZ
SECRET_NAME = "watermark_key"


def tenant_payload(tenant_id: str) -> int:
    return int(int.from_bytes(hashlib.sha256(tenant_id.encode()).digest()[:2], "big") % 2**PAYLOAD_BITS)


@dataclass(frozen=True)
class Marking:
    key: bytes

    @property
    def key_id(self) -> str:
        """Names the key in audit rows without revealing it (key rotation shows as a new id)."""
        return hashlib.sha256(b"chorus-watermark-key-id" + self.key).hexdigest()[:12]

    def marker(self, tenant_id: str, sample_rate: int) -> OutputMarker:
        return OutputMarker(Watermarker(self.key, sample_rate).stream(tenant_payload(tenant_id)))

    def receipt(self, tenant_id: str) -> dict[str, object]:
        """What an audit row records of the mark."""
        return {"payload": tenant_payload(tenant_id), "key_id": self.key_id}

    def detect(self, audio: np.ndarray, sample_rate: int) -> Detection:
        return detect(audio, sample_rate, self.key)

    def is_marked(self, audio: np.ndarray, sample_rate: int) -> bool:
        return self.detect(audio, sample_rate).watermarked


class OutputMarker:
    """Marks one request's outputs in order: each output's audio is replaced by the marked samples that are final
    (up to 40 ms are held back), and the held-back tail goes out with the last output."""

    def __init__(self, stream: MarkStream) -> None:
        self._stream = stream
        self._done = False

    def mark(self, out: RequestOutput) -> RequestOutput:
        audio = self._stream.push(out.audio)
        if out.is_finished:
            audio = np.concatenate([audio, self._stream.flush()])
            self._done = True
        return dataclasses.replace(out, audio=audio)

    def tail(self, last: RequestOutput) -> RequestOutput | None:
        """After a final output without audio (or the end of the stream): the held-back samples, if any."""
        if self._done:
            return None
        self._done = True
        audio = self._stream.flush()
        if audio.size == 0:
            return None
        return dataclasses.replace(last, audio=audio, is_finished=True)


def key_from_file(data_dir: Path) -> bytes:
    """The key in ``data_dir`` (made, readable by its owner only, the first time)."""
    path = data_dir / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(key.hex())
    return key


def configured_key(value: SecretStr | str | None) -> bytes | None:
    """``safety.watermark_key`` as bytes: hex when it is hex, else its UTF-8 bytes (any passphrase works)."""
    text = (value.get_secret_value() if isinstance(value, SecretStr) else value or "").strip()
    if not text:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode()
