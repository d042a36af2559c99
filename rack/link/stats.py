"""The process figures a rack reports in its heartbeats, from the standard library only.

`cpu_percent`: CPU time (user + system) the process used since the previous sample, as a
percentage of the wall time in between (can exceed 100 on several cores). `rss_bytes`: resident
memory from /proc/self/statm; where there is no /proc, the peak RSS from getrusage. `load1`: the
one-minute load average, or absent where the platform has none.
"""

from __future__ import annotations

import os
import resource
import sys
import time

from rack.link.protocol import HeartbeatStats

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcessSampler:
    """Samples the current process; each `sample()` measures CPU since the previous one."""

    def __init__(self) -> None:
        self._cpu, self._wall = _cpu_seconds(), time.monotonic()

    def sample(self, gears: int | None = None) -> HeartbeatStats:
        cpu, wall = _cpu_seconds(), time.monotonic()
        elapsed = wall - self._wall
        percent = 100.0 * (cpu - self._cpu) / elapsed if elapsed > 0 else 0.0
        self._cpu, self._wall = cpu, wall
        return HeartbeatStats(
            cpu_percent=round(percent, 2), rss_bytes=_rss_bytes(), load1=_load1(), gears=gears
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None
