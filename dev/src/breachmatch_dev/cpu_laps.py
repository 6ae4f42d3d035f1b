"""CPU seconds of consecutive steps in this process, by name (the benchmarks' phase tables).

CPU rather than wall time, because the benchmarks run on shared machines
where the neighbours' load moves the wall clock but not this process's CPU.
"""

from __future__ import annotations

import time


class CpuLaps:
    """``lap(name)`` records the CPU seconds since the previous lap (or `restart`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.process_time()

    def restart(self) -> None:
        """Start the next lap now: what ran since the last one is not counted."""
        self._mark = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.seconds[name] = now - self._mark
        self._mark = now
