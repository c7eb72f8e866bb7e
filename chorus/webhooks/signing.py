"""Signing webhook deliveries the Standard Webhooks way (https://www.standardwebhooks.com).

A receiver must be able to tell that a POST came from chorus, carries the body chorus sent, and is not an old
message replayed. Standard Webhooks does this with three headers: ``webhook-id`` (a message id, the same on
every retry so that receivers can deduplicate), ``webhook-timestamp`` (Unix seconds, so stale messages can be
refused) and ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}." + body)), where the key
is the base64 part of a ``whsec_…`` secret. The header may hold several space-separated signatures, so during a
secret rotation chorus signs with both the new and the previous secret and a receiver holding either verifies.
Following a published convention means receivers can use its libraries in any language instead of ours.

Receiver verification
---------------------
A receiver needs nothing but the standard library (``headers`` with lower-case names, ``body`` the raw bytes
received, before any JSON parsing):

```python
import base64, hashlib, hmac, time

def verify_webhook(secret: str, headers: dict, body: bytes, tolerance_s: int = 300) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = ("v1," + base64.b64encode(mac).decode()).encode()
    signatures = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, signature.encode()) for signature in signatures)
```

tests/webhooks/test_signing.py executes this very text, so the README's copy is proven to work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from secrets import token_bytes

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
_MIN_KEY_BYTES, _MAX_KEY_BYTES = 24, 64  # what Standard Webhooks allows
# Header-safe and free of ".", which separates the id from the timestamp in the signed content.
_MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes, to show the customer once."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message under one secret."""
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("a message id is 1-128 letters, digits, '_' or '-'")
    if timestamp < 0:
        raise ValueError("a timestamp is Unix seconds")
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, with one signature per secret (current, then previous if rotating)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets),
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: int | None = None, tolerance_s: int = 300
) -> bool:
    """Whether ``headers`` carry a valid signature of ``body`` under ``secret`` with a timestamp within
    ``tolerance_s`` of ``now`` (either way: a timestamp far in the future is as suspicious as an old one).

    Header names are matched case-insensitively; signatures are compared in constant time.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    if not (_MSG_ID.fullmatch(msg_id) and timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(timestamp), body).encode()
    signatures = lowered.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, signature.encode()) for signature in signatures)


def _key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; a malformed secret is a configuration error, so it raises."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is 'whsec_' followed by base64") from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(f"a signing secret holds {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes")
    return key
