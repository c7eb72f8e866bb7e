from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chorus.config import load_settings
from chorus.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chorus.yaml"
    path.write_text(text)
    return path


def test_vtts_keys_are_read_from_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model:\n  name: piper\n  device: cpu\nworker:\n  emit_every_frames: 40\n  max_slots: 12\n  max_frames: 900\n"
        "server:\n  port: 9100\n  queue_limit: 7\n  request_timeout_s: 30\ndata_dir: ~/somewhere\n",
    )
    s = load_settings(path)
    assert (s.worker.emit_every_frames, s.worker.max_slots, s.worker.max_frames) == (40, 12, 900)
    assert (s.server.port, s.server.queue_limit, s.server.request_timeout_s) == (9100, 7, 30)
    assert s.data_dir == Path.home() / "somewhere"


def test_env_overrides_the_file_and_flags_override_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "worker:\n  max_slots: 12\nserver:\n  port: 9100\n")
    monkeypatch.setenv("CHORUS_WORKER__MAX_SLOTS", "20")
    monkeypatch.setenv("CHORUS_SERVER__PORT", "9200")
    s = load_settings(path, server__port=9300)
    assert s.worker.max_slots == 20
    assert s.server.port == 9300


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("worker:\n  max_slots: 0\n", "worker.max_slots"),
        ("worker:\n  mode: sideways\n", "worker.mode"),
        ("server:\n  port: lots\n", "server.port"),
        ("model:\n  colour: blue\n", "model.colour"),
        ("- just\n- a list\n", "mapping"),
        ("worker: [unclosed\n", "YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert key in info.value.message


def test_shipped_example_config_is_valid() -> None:
    load_settings(Path(__file__).parent.parent / "config.example.yaml")


def test_cli_bad_config_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, "worker:\n  max_slots: -3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "worker.max_slots" in lines[0], proc.stderr


def test_cli_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: no-such-model\n")
    proc = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "voices", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "model.name" in proc.stderr


def test_cli_unreachable_database_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"store:\n  database_url: nosuchdriver://x/y\ndata_dir: {tmp_path / 'data'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chorus: config error: store:"), proc.stderr
