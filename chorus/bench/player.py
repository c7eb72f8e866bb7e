"""A simulated listener: plays a stream at real-time speed from its first audio byte and notes every stall.

Run after the fact on the recorded arrival times, so the client does no per-chunk work during the load.
"""

from __future__ import annotations

from dataclasses import dataclass

# Gaps shorter than this are timer noise, not something a listener hears; real players also buffer a few ms.
STALL_TOLERANCE_S = 0.001


@dataclass(frozen=True)
class Playback:
    underruns: int
    stall_s: float
    # Where the first stall happened: seconds of audio played before it (None without one).
    first_stall_at_s: float | None = None


def simulate(arrivals: list[tuple[float, float]], tolerance_s: float = STALL_TOLERANCE_S) -> Playback:
    """Replay ``arrivals`` ((time since send, cumulative audio seconds) pairs, in order) through a player.

    Playback starts at the first arrival. Whenever everything received so far has been played and more is still
    to come, that is an underrun; the player waits, and resumes the moment the next piece arrives.
    """
    if not arrivals:
        return Playback(0, 0.0)
    clock, buffered = arrivals[0]
    played = 0.0
    underruns = 0
    stall = 0.0
    first: float | None = None
    for at, total in arrivals[1:]:
        elapsed = at - clock
        left = buffered - played
        if elapsed > left + tolerance_s:
            underruns += 1
            stall += elapsed - left
            played = buffered
            first = buffered if first is None else first
        else:
            played += min(elapsed, left)
        buffered = total
        clock = at
    return Playback(underruns, stall, first)
