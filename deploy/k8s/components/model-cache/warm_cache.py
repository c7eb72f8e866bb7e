"""Warm this node's model cache: copy a model folder from object storage to a hostPath, atomically, then keep it.

Runs in the chorus image (fsspec and s3fs are chorus dependencies) as the node-local cache DaemonSet. A folder is
complete once ``.complete`` exists in it; chorus pods wait for that file, then mount the cache read-only at
/models. Ship a new model under a new MODEL_NAME (e.g. qwen3-tts-1.7b-v2): a complete folder is never rewritten
under a running pod. Env: MODEL_SOURCE (s3://bucket/models/qwen3-tts-1.7b), MODEL_NAME, CACHE_ROOT (/cache),
RESYNC_INTERVAL_S, and the CHORUS_STORE__S3_* settings (or the pod's IAM role).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import fsspec

log = logging.getLogger("warm_cache")


def storage_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    if endpoint := os.environ.get("CHORUS_STORE__S3_ENDPOINT_URL"):
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if key := os.environ.get("CHORUS_STORE__S3_KEY"):
        options["key"] = key
    if secret := os.environ.get("CHORUS_STORE__S3_SECRET"):
        options["secret"] = secret
    return options


def warm(source: str, target: Path) -> None:
    """Copy ``source`` (a folder URL) to ``target`` unless ``target`` is already complete."""
    if (target / ".complete").exists():
        return
    fs, root = fsspec.core.url_to_fs(source, **storage_options())
    files = {path: info for path, info in fs.find(root, detail=True).items() if info.get("type") == "file"}
    if not files:
        raise RuntimeError(f"no files under {source}")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for path, info in sorted(files.items()):
        local = staging / os.path.relpath(path, root)
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(local))
        if local.stat().st_size != info.get("size", local.stat().st_size):
            raise RuntimeError(f"{path}: size mismatch after download")
    manifest = {os.path.relpath(p, root): i.get("size") for p, i in files.items()}
    (staging / ".complete").write_text(json.dumps({"source": source, "files": manifest}, sort_keys=True))
    shutil.rmtree(target, ignore_errors=True)  # an incomplete folder from an older run
    os.rename(staging, target)  # atomic on one filesystem: readers see nothing or everything
    log.info("cached %s (%d files) at %s", source, len(files), target)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    source = os.environ["MODEL_SOURCE"].rstrip("/")
    target = Path(os.environ.get("CACHE_ROOT", "/cache")) / os.environ["MODEL_NAME"]
    interval = float(os.environ.get("RESYNC_INTERVAL_S", "300"))
    while True:
        try:
            warm(source, target)
        except Exception:  # a transient S3 error: retry after the interval, the DaemonSet stays up
            log.exception("warming %s failed", target)
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
