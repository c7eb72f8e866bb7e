"""Standard Webhooks signatures: what chorus sends verifies (with its own verify and with the README's
stdlib-only snippet), and any change to the body, id, timestamp or secret does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest

from chorus.webhooks import signing
from chorus.webhooks.signing import headers, new_secret, sign, verify

BODY = b'{"type":"job.completed","data":{"job_id":"job_123","status":"succeeded"}}'
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NOW = 1_700_000_000


def test_new_secrets_are_whsec_with_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32


def test_signature_matches_the_standard_webhooks_definition() -> None:
    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{MSG_ID}.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(secret, MSG_ID, NOW, BODY) == "v1," + base64.b64encode(mac).decode()


def test_known_vector_from_the_standard_webhooks_libraries() -> None:
    # The test vector the reference libraries share (standard-webhooks/standard-webhooks, libraries' tests).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    body = b'{"test": 2432232314}'
    assert sign(secret, msg_id, timestamp, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify() -> None:
    secret = new_secret()
    sent = headers([secret], MSG_ID, NOW, BODY)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert sent["webhook-id"] == MSG_ID and sent["webhook-timestamp"] == str(NOW)
    assert verify(secret, sent, BODY, now=NOW)
    assert verify(secret, {name.title(): value for name, value in sent.items()}, BODY, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b + b" "),
        lambda h, b: (h, b.replace(b"succeeded", b"failed")),
        lambda h, b: (h, b""),
        lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b),
        lambda h, b: ({**h, "webhook-id": "msg_other"}, b),
        lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, b),
        lambda h, b: ({**h, "webhook-signature": h["webhook-signature"][:-4] + "AAA="}, b),
        lambda h, b: ({**h, "webhook-signature": ""}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-timestamp"}, b),
        lambda h, b: ({**h, "webhook-timestamp": "１７００００００００"}, b),  # fullwidth digits
        lambda h, b: ({**h, "webhook-timestamp": f"{NOW}.0"}, b),
        lambda h, b: ({**h, "webhook-signature": "v1,ünïcode"}, b),
    ],
)
def test_tampering_fails(tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]) -> None:
    secret = new_secret()
    tampered_headers, tampered_body = tamper(headers([secret], MSG_ID, NOW, BODY), BODY)
    assert not verify(secret, tampered_headers, tampered_body, now=NOW)


def test_another_secret_fails() -> None:
    assert not verify(new_secret(), headers([new_secret()], MSG_ID, NOW, BODY), BODY, now=NOW)


def test_stale_and_future_timestamps_fail() -> None:
    secret = new_secret()
    sent = headers([secret], MSG_ID, NOW, BODY)
    assert verify(secret, sent, BODY, now=NOW + 300)
    assert verify(secret, sent, BODY, now=NOW - 300)
    assert not verify(secret, sent, BODY, now=NOW + 301)
    assert not verify(secret, sent, BODY, now=NOW - 301)
    assert not verify(secret, sent, BODY, now=NOW + 60, tolerance_s=30)
    assert verify(secret, headers([secret], MSG_ID, int(time.time()), BODY), BODY)  # now defaults to the clock


def test_rotation_verifies_under_either_secret() -> None:
    old, new = new_secret(), new_secret()
    sent = headers([new, old], MSG_ID, NOW, BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    assert verify(new, sent, BODY, now=NOW)
    assert verify(old, sent, BODY, now=NOW)
    assert not verify(new_secret(), sent, BODY, now=NOW)
    assert not verify(old, sent, BODY + b"!", now=NOW)


@pytest.mark.parametrize(
    "call",
    [
        lambda: headers([], MSG_ID, NOW, BODY),
        lambda: sign("whsec_not base64!", MSG_ID, NOW, BODY),
        lambda: sign("whsec_" + base64.b64encode(b"short").decode(), MSG_ID, NOW, BODY),
        lambda: sign(new_secret(), "msg.with.dots", NOW, BODY),
        lambda: sign(new_secret(), "msg\r\nx-injected: 1", NOW, BODY),
        lambda: sign(new_secret(), "", NOW, BODY),
        lambda: sign(new_secret(), MSG_ID, -1, BODY),
    ],
)
def test_bad_inputs_raise(call: Callable[[], Any]) -> None:
    with pytest.raises(ValueError):
        call()


def readme_snippet() -> str:
    assert signing.__doc__ is not None
    found = re.search(r"```python\n(.*?)```", signing.__doc__, re.DOTALL)
    assert found is not None, "the receiver snippet is missing from chorus.webhooks.signing's docstring"
    return textwrap.dedent(found.group(1))


def test_the_readme_snippet_verifies_what_chorus_sends() -> None:
    snippet = readme_snippet()
    assert len(snippet.strip().splitlines()) <= 14
    assert set(re.findall(r"^import (.*)$", snippet, re.MULTILINE)) == {"base64, hashlib, hmac, time"}
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "<README snippet>", "exec"), namespace)
    verify_webhook = namespace["verify_webhook"]

    old, new = new_secret(), new_secret()
    now = int(time.time())
    sent = headers([new, old], MSG_ID, now, BODY)
    assert verify_webhook(new, sent, BODY) is True
    assert verify_webhook(old, sent, BODY) is True
    assert verify_webhook(new_secret(), sent, BODY) is False
    assert verify_webhook(new, sent, BODY + b" ") is False
    assert verify_webhook(new, {**sent, "webhook-timestamp": str(now + 1)}, BODY) is False
    assert verify_webhook(new, {**sent, "webhook-id": "msg_other"}, BODY) is False
    assert verify_webhook(new, {**sent, "webhook-timestamp": "１７００００００００"}, BODY) is False
    stale = headers([new], MSG_ID, now - 301, BODY)
    assert verify_webhook(new, stale, BODY) is False
    assert verify_webhook(new, {}, BODY) is False
