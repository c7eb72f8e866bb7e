from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import av


def chorus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chorus.cli", *args], capture_output=True, text=True, timeout=120)


def test_say_writes_a_wav(tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    proc = chorus("say", "Hello from the command line. It works offline.", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1
        assert 1.5 < w.getnframes() / w.getframerate() < 8


def test_say_picks_the_format_from_the_extension(tmp_path: Path) -> None:
    out = tmp_path / "hello.mp3"
    proc = chorus("say", "An mp3 this time.", "-o", str(out), "--speed", "1.5")
    assert proc.returncode == 0, proc.stderr
    with av.open(str(out)) as container:
        assert container.format.name == "mp3"
        assert container.streams.audio[0].codec_context.name.startswith("mp3")


def test_say_refuses_an_unknown_voice(tmp_path: Path) -> None:
    proc = chorus("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--voice", "nobody")
    assert proc.returncode == 1
    assert "unknown voice" in proc.stderr


def test_voices_lists_built_in_and_cloned_voices(tmp_path: Path) -> None:
    from chorus.store import VoiceStore, open_store
    from chorus.store.settings import StoreConfig

    sql, blobs = open_store(StoreConfig(), tmp_path)
    VoiceStore(sql, blobs).create("default", "Ada", "en", None, b"o", b"p", b"e", duration_s=4.0, sample_rate=24_000)
    sql.close()
    config = tmp_path / "chorus.yaml"
    config.write_text(f"data_dir: {tmp_path}\n")
    proc = chorus("voices", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    builtin, cloned = proc.stdout.splitlines()
    assert builtin.startswith("joe\ten_US\tbuilt-in")
    assert cloned.startswith("voice_") and cloned.endswith("\ten\tcloned: Ada (4.0 s reference)")
