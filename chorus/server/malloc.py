"""glibc malloc settings for a long-running server process.

glibc gives an allocation its own mapping (returned to the kernel on ``free``) only above a threshold that starts at
128 KiB and rises, up to 32 MiB, to the size of every such block freed. A server that makes and drops audio
buffers of a few hundred KiB on several threads therefore soon keeps them all in its heaps, where they fragment:
the soak bench's server held ~80 MiB more resident memory with the moving threshold than with it fixed at
128 KiB (issue #11's note). ``mallopt(M_MMAP_THRESHOLD)`` fixes it, and stops it moving.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (None elsewhere: musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def set_by_environment() -> bool:
    """Whether the process was started with its own threshold (glibc read it before Python ran)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in tunables


def fix_mmap_threshold(kib: int | None) -> bool:
    """Fix glibc's mmap threshold at ``kib`` KiB (None: leave glibc's moving default). An operator's own
    ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES`` wins. Returns whether this call set it."""
    if kib is None or set_by_environment():
        return False
    libc = glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(kib * 1024)))
    if not done:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d KiB) was refused; glibc's default stays", kib)
    return done
