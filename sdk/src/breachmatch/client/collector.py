"""Pausing Python's cyclic garbage collector while a check builds large acyclic structures.

Reading 130,000 patients creates millions of small objects (records, match
keys, tuples, lists) that all stay alive, and every collection of the older
generations walks all of them again: measured by ``bench/bench_check.py``,
that was a quarter of a cached re-check's CPU (index building alone went
from 0.09 to 0.4 s for 80,000 keys). What these phases build holds no
reference cycles, so deferring collection to the end of the phase frees
nothing later than it would be freed anyway; reference counting still frees
everything else at once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block; the collector's state is restored after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
