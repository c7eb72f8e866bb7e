"""How much CPU the machine leaves to the engine's workers, and what serving costs besides the model.

Read from the kernel's own accounting, about once a second: the whole machine's busy CPU time (``/proc/stat``)
and this process's (``os.times``), against the CPU the workers reported for their steps. Then

- other processes' use = machine busy - this process (a build, another server, a load generator);
- stolen = the time a virtual machine's hypervisor ran something else while its CPUs had work (``steal`` in
  ``/proc/stat``): no process of this machine, but cores' worth the workers do not get either;
- serving overhead = this process - its workers, per second of audio produced (HTTP, resampling, encoding,
  phonemizing, the engine loop): it grows with the streams, so admission charges it to each window (capped at
  MAX_OVERHEAD, and fading while little audio is made: a flood of refused requests is CPU without audio);
- cores left to the workers = cores - other processes' use - stolen.

Steal is kept apart from other processes because it slows every thread of this process alike: a thread more
than the cores (the pipelined engine's newcomer lane) time-shares nobody else's core under steal, so it is only
other processes that make the machine busy for that. On a shared cloud VM steal came and went between 0.1 and
0.65 of a core while chorus served 8 live streams and the machine's other processes used 0.01-0.03 (issue #9).

Each is an exponential average of per-interval readings. Where ``/proc/stat`` does not exist (not Linux), other
processes count as using nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PROC_STAT = Path("/proc/stat")
SAMPLE_EVERY_S = 1.0
OTHERS_WEIGHT = 0.5  # a new reading's weight: other load appears and goes quickly
OVERHEAD_WEIGHT = 0.2
MIN_AUDIO_S = 0.5  # an interval with less audio than this says little about overhead per audio second
# Serving costs a few hundredths of a core-second per audio second; a reading far above that is a flood of
# requests being parsed and refused (CPU without audio), not a cost of the audio: it is capped.
MAX_OVERHEAD = 0.1


class MachineCpu(NamedTuple):
    busy_s: float  # CPU seconds every core spent busy since boot: user, nice, system, irq, softirq (guests in user)
    stolen_s: float  # seconds a hypervisor ran something else while these cores had work


def machine_cpu_s() -> MachineCpu | None:
    """The machine's CPU accounting since boot, or None where /proc/stat is missing."""
    try:
        first = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return MachineCpu((sum(ticks[:3]) + ticks[5] + ticks[6]) / hz, ticks[7] / hz)


def process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True, slots=True)
class CpuReading:
    cores: int
    others: float  # cores' worth used by other processes
    overhead: float  # CPU seconds of this process outside its workers, per second of audio produced
    stolen: float = 0.0  # cores' worth a hypervisor ran something else on

    @property
    def left(self) -> float:
        """Cores left to the workers (at least a tenth of one)."""
        return max(0.1, self.cores - self.others - self.stolen)


class CpuLoad:
    """Samples the machine's and this process's CPU use (thread-safe; cheap: two small reads a second)."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._lock = threading.Lock()
        self._others = 0.0
        self._stolen = 0.0
        self._overhead = 0.0
        self._workers_cpu = 0.0
        self._audio = 0.0
        self._last: tuple[float, MachineCpu | None, float, float, float] | None = None

    def note_step(self, cpu_s: float, audio_s: float) -> None:
        """A worker's step: its CPU seconds and the audio it produced."""
        with self._lock:
            self._workers_cpu += cpu_s
            self._audio += audio_s

    def sample(self, now: float | None = None) -> None:
        """Take a reading if the last is SAMPLE_EVERY_S old."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is not None and now - self._last[0] < SAMPLE_EVERY_S:
                return
            reading = (now, machine_cpu_s(), process_cpu_s(), self._workers_cpu, self._audio)
            last, self._last = self._last, reading
            if last is None:
                return
            dt = now - last[0]
            own = reading[2] - last[2]
            machine, machine_before = reading[1], last[1]
            if machine is not None and machine_before is not None:
                others = max(0.0, (machine.busy_s - machine_before.busy_s - own) / dt)
                stolen = max(0.0, (machine.stolen_s - machine_before.stolen_s) / dt)
                self._others += OTHERS_WEIGHT * (others - self._others)
                self._stolen += OTHERS_WEIGHT * (stolen - self._stolen)
            audio = reading[4] - last[4]
            if audio >= MIN_AUDIO_S:
                overhead = min(MAX_OVERHEAD, max(0.0, own - (reading[3] - last[3])) / audio)
                self._overhead += OVERHEAD_WEIGHT * (overhead - self._overhead)
            else:  # little audio: nothing to learn from, and a stale high reading must not keep everyone out
                self._overhead *= 1.0 - OVERHEAD_WEIGHT

    def reading(self) -> CpuReading:
        with self._lock:
            return CpuReading(self.cores, self._others, self._overhead, self._stolen)
