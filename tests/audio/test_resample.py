"""Streaming resampling: what a stream keeps back until its end (the engine's deadlines count on it)."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.audio.resample import StreamResampler, hold_back_s


def test_no_resampling_keeps_nothing_back() -> None:
    assert hold_back_s(22050, 22050) == 0.0
    audio = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(StreamResampler(22050, 22050).process(audio), audio)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 24000), (22050, 16000), (24000, 48000), (16000, 22050)])
def test_a_stream_keeps_back_at_most_hold_back_s_and_gives_it_all_at_the_end(in_rate: int, out_rate: int) -> None:
    held = hold_back_s(in_rate, out_rate)
    assert 0.005 < held < 0.1  # a filter's delay, not nothing and not a chunk
    rng = np.random.default_rng(in_rate + out_rate)
    for _ in range(20):
        resampler = StreamResampler(in_rate, out_rate)
        fed = made = 0
        for _ in range(8):  # engine windows: whole 256-sample frames, up to a few seconds
            size = int(rng.integers(1, 400)) * 256
            made += resampler.process(rng.uniform(-0.5, 0.5, size).astype(np.float32)).size
            fed += size
            assert fed / in_rate - made / out_rate <= held + 0.005
        made += resampler.process(np.zeros(0, dtype=np.float32), last=True).size
        assert abs(made / out_rate - fed / in_rate) <= 2 / out_rate
