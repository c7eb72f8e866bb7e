"""The audit trail over a real `chorus serve`: one row per synthesis with the hash of the bytes the client got,
and `chorus audit verify|export` on the server's database, before and after someone edits it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import start_server, stop_server
from tests.e2e.test_auth import cli

pytestmark = [pytest.mark.e2e]


def test_synthesis_rows_hash_the_delivered_audio_and_the_chain_catches_an_edit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(tmp_path, {"data_dir": str(data)})
    try:
        text = "The audit trail keeps this sentence's hash."
        mp3 = httpx.post(
            f"{server.url}/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "mp3"},
            timeout=60,
        )
        assert mp3.status_code == 200, mp3.text
        refused = httpx.post(
            f"{server.url}/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": " "}, timeout=60
        )
        assert refused.status_code == 400  # refused before any synthesis: no row
        with httpx.stream(
            "POST",
            f"{server.url}/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": text * 20, "response_format": "pcm"},
            timeout=60,
        ) as gone:
            next(gone.iter_bytes())  # the client leaves after its first audio
    finally:
        stop_server(server)  # a drained server has written every row
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data)}))
    exported = cli(config, "audit", "export", "--tenant", "default")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["kind"], r["detail"]["outcome"]) for r in rows] == [("synthesis", "ok"), ("synthesis", "aborted")]
    first = rows[0]["detail"]
    assert first["audio_sha256"] == hashlib.sha256(mp3.content).hexdigest()
    assert first["audio_bytes"] == len(mp3.content) and first["format"] == "mp3"
    assert first["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert rows[0]["subject"] and rows[0]["key_id"] is None  # the voice; keyless on loopback
    assert first["audio_seconds"] > 1 and 0 < first["first_byte_s"] <= first["total_s"]
    assert rows[1]["detail"]["audio_bytes"] > 0

    verified = cli(config, "audit", "verify")
    assert verified.returncode == 0 and "audit chain ok: 2 rows" in verified.stdout
    with sqlite3.connect(data / "chorus.db") as db:  # someone rewrites history
        db.execute("UPDATE audit_log SET detail = replace(detail, '\"aborted\"', '\"ok\"') WHERE seq = 2")
    broken = cli(config, "audit", "verify")
    assert broken.returncode == 1 and "BROKEN at row 2" in broken.stderr
