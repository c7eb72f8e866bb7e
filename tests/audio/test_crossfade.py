from __future__ import annotations

import numpy as np

from chorus.audio.crossfade import Crossfader, equal_power_ramps


def test_ramps_keep_power() -> None:
    fade_out, fade_in = equal_power_ramps(64)
    np.testing.assert_allclose(fade_out**2 + fade_in**2, 1.0, atol=1e-6)


def test_chunks_inside_a_segment_pass_untouched() -> None:
    xf = Crossfader(10)
    a = np.linspace(-1, 1, 100, dtype=np.float32)
    np.testing.assert_array_equal(xf.push(a, is_segment_end=False), a)
    assert xf.flush().size == 0


def test_a_seam_is_overlap_added_without_a_jump() -> None:
    rate, overlap = 8000, 80
    t = np.arange(800) / rate
    # Two segments that do not meet: one ends high, the next starts low (a click if butted together).
    a = (0.5 + 0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    b = (-0.5 + 0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    xf = Crossfader(overlap)
    out = np.concatenate([xf.push(a, is_segment_end=True), xf.push(b, is_segment_end=True), xf.flush()])
    assert out.size == a.size + b.size - overlap
    butted = np.concatenate([a, b])
    assert np.abs(np.diff(butted)).max() > 0.9
    assert np.abs(np.diff(out)).max() < 0.05  # the step is spread over the overlap
    np.testing.assert_array_equal(out[: a.size - overlap], a[: a.size - overlap])
    np.testing.assert_array_equal(out[a.size :], b[overlap:])
