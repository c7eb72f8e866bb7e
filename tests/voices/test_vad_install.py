"""The VAD the speaker encoder uses is the base install's ``webrtcvad-wheels``, byte for byte.

resemblyzer (the test-only reference, ``.[voices]``) depends on the old ``webrtcvad`` sdist, which writes the
same module files; scripts/test.sh reinstalls ``webrtcvad-wheels`` last, so the suite tests what users run.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from pathlib import Path

import _webrtcvad
import webrtcvad


def _recorded_hash(dist: importlib.metadata.Distribution, installed: Path) -> str | None:
    for record in dist.files or []:
        if Path(dist.locate_file(record)).resolve() == installed.resolve():
            return None if record.hash is None else record.hash.value
    raise AssertionError(f"{installed} is not a file of {dist.metadata['Name']}")


def test_the_imported_vad_is_webrtcvad_wheels() -> None:
    dist = importlib.metadata.distribution("webrtcvad-wheels")
    for module in (webrtcvad, _webrtcvad):
        path = Path(str(module.__file__))
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        assert _recorded_hash(dist, path) == digest, f"{path} is not the file webrtcvad-wheels installed"
