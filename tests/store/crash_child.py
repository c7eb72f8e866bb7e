"""Body of the subprocesses that test_crash.py kills with SIGKILL at a chosen point.

python crash_child.py voice '<json>'   create a voice; at stage args["stage"], report the voice id in
                                        args["marker"] and wait to be killed
python crash_child.py blob '<json>'    write one big blob to a LocalBlobStore (the test kills it mid-write)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from chorus.store import LocalBlobStore, StoreConfig, VoiceStore, open_store


def _report(marker: Path, text: str) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, marker)


def create_voice(args: dict[str, object]) -> None:
    marker = Path(str(args["marker"]))

    def hook(stage: str, voice_id: str) -> None:
        if stage == args["stage"]:
            _report(marker, voice_id)
            time.sleep(600)  # the test kills us here

    config = StoreConfig.model_validate(args["config"])
    sql, blobs = open_store(config, Path(str(args["data_dir"])), migrate=False)
    store = VoiceStore(sql, blobs, on_stage=hook)
    store.create(str(args["tenant"]), str(args["name"]), "en", None, b"o" * 4096, b"p" * 4096, b"e" * 256,
                 duration_s=1.0, sample_rate=24_000)  # fmt: skip


def write_blob(args: dict[str, object]) -> None:
    store = LocalBlobStore(Path(str(args["root"])))
    data = b"N" * int(str(args["size"]))
    _report(Path(str(args["marker"])), "writing")
    store.put(str(args["key"]), data)
    time.sleep(600)


if __name__ == "__main__":
    {"voice": create_voice, "blob": write_blob}[sys.argv[1]](json.loads(sys.argv[2]))
