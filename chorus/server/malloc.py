"""glibc malloc settings for a long-running server process.

glibc gives an allocation its own mapping (returned to the kernel on ``free``) only above a threshold that starts at
128 KiB and rises, up to 32 MiB, to the size of every such block freed. A server that makes and drops audio
buffers of a few hundred KiB on several threads therefore soon keeps them all in its heaps, where they fragment:
the soak bench's server held ~80 MiB more resident memory with the moving threshold than with it fixed at
128 KiB (issue #11's note). ``mallopt(M_MMAP_THRESHOLD)`` fixes it, and stops it moving.

glibc gives memory back on ``free`` only from the top of a heap. The free pages between live chunks stay resident
until ``malloc_trim``, which walks every arena and hands them back (``madvise``); ``chorus serve`` calls it every
``server.malloc_trim_interval_s`` (it took 1.5-4 ms with a 2-core server at capacity, and halved the soak's RSS
slope: issue #11's note).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>


@functools.cache
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


def trim() -> bool:
    """Hand the free pages of every malloc arena back to the kernel (glibc's ``malloc_trim(0)``). Returns whether
    any memory was released (False where the C library is not glibc)."""
    libc = glibc()
    return bool(libc.malloc_trim(ctypes.c_size_t(0))) if libc is not None else False
