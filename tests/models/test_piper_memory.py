"""The Piper graph's sessions keep no per-shape memory: every request brings new shapes (see piper_graph._session)."""

from __future__ import annotations

import gc

from chorus.models.piper import PiperBackend


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_sessions_have_no_arena_and_no_memory_patterns(piper: PiperBackend) -> None:
    for session in (piper.graph.encoder, piper.graph.decoder):
        options = session.get_session_options()
        assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern


def test_new_shapes_do_not_grow_memory(piper: PiperBackend) -> None:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near", "seven", "quiet", "rivers"]
    texts = [" ".join(words[: 3 + i % 10] * (1 + i % 4)) + "." for i in range(40)]
    for text in texts[:10]:
        piper.render(text)
    gc.collect()
    before = _rss_mib()
    for text in texts[10:]:
        piper.render(text)
    gc.collect()
    # With ORT's arena and memory patterns, these 30 renders of new lengths added 312 MiB; without, a few MiB.
    assert _rss_mib() - before < 40
