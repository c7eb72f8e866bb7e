"""glibc settings (chorus.server.malloc), each case in a fresh interpreter so the heap's history is known: the fixed
mmap threshold observed in glibc's own accounting (mallinfo2's hblks: blocks with a mapping of their own), and
malloc_trim in the process's resident memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from chorus.server.malloc import glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="glibc's malloc only (Linux with glibc)")

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from chorus.server.malloc import fix_mmap_threshold, glibc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = glibc()
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    fixed = fix_mmap_threshold(int(sys.argv[1])) if sys.argv[1] != "none" else False
    libc.free(libc.malloc(4 << 20))  # a 4 MiB block mapped and freed: glibc's default threshold rises to 4 MiB
    before = libc.mallinfo2().hblks
    block = libc.malloc(1 << 20)  # 1 MiB
    print(fixed, libc.mallinfo2().hblks - before)
    libc.free(block)
    """
)


def probe(arg: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, arg], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=60
    )
    fixed, mapped = out.stdout.split()
    return fixed, int(mapped)


def test_glibc_default_keeps_a_block_in_the_heap_after_a_bigger_one_was_freed() -> None:
    assert probe("none") == ("False", 0)


def test_fixed_threshold_gives_the_block_its_own_mapping() -> None:
    assert probe("128") == ("True", 1)


def test_a_block_under_the_fixed_threshold_stays_in_the_heap() -> None:
    assert probe("2048") == ("True", 0)


def test_the_operators_environment_wins() -> None:
    # glibc read MALLOC_MMAP_THRESHOLD_ (512 KiB) at start: chorus leaves it (2 MiB would keep the block in the
    # heap), and, fixed by the environment, it does not rise either: the 1 MiB block gets its own mapping
    assert probe("2048", MALLOC_MMAP_THRESHOLD_=str(512 << 10)) == ("False", 1)


TRIM_PROBE = textwrap.dedent(
    """
    import ctypes, threading
    from chorus.server.malloc import glibc, trim

    libc = glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def fragment():  # in a thread of its own: its own arena, as the server's worker threads have
        blocks = [libc.malloc(2048) for _ in range(50_000)]  # ~100 MiB
        for block in blocks:
            ctypes.memset(block, 1, 2048)  # resident
        for i, block in enumerate(blocks):
            if i % 64:  # one block in 64 stays live: the heap cannot shrink from its top
                libc.free(block)

    thread = threading.Thread(target=fragment)
    thread.start()
    thread.join()
    before = rss_mib()
    released = trim()
    print(released, round(before - rss_mib()))
    """
)


def test_trim_hands_free_pages_between_live_blocks_back() -> None:
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True, timeout=60)
    released, freed_mib = out.stdout.split()
    # ~98 MiB was freed around the live blocks; without malloc_trim it stays resident
    assert released == "True" and int(freed_mib) >= 60, out.stdout
