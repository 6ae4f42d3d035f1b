"""Filter entries in bounded memory: sorted runs, spilled to disk, merged back in order.

A 10-million-row dump gives some 40 million (tag hash, pad, label) pairs; held
and sorted in memory they take about 3 GB, over the ingest Job's limit. So the
writer keeps at most `run_pairs` pairs in memory: when that many have arrived
it sorts them into a *run* (distinct outputs, ordered by their 128-bit tag
hash, duplicates merged) and writes the run to an anonymous temporary file,
18 bytes per entry. `merge` reads every run a window at a time and yields the
distinct entries of all of them in order, in slices of bounded size, so the
memory used at `finish` does not grow with the dump either.

Sorting and merging only ever order by the whole 128-bit hash and OR the
labels of equal hashes, so the entries that come out are the same whatever
the run size: a spilled filter is byte-identical to one built in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

#: Entries an in-memory run holds before it is sorted and spilled (≈ 36 MiB).
DEFAULT_RUN_PAIRS = 1 << 21
#: A merge reads at least this many entries per run at a time.
_MIN_WINDOW = 1 << 12
#: Each column of `Entries`, in the order a run file stores them.
_COLUMNS = (("wide", np.dtype("<u8")), ("low", np.dtype("<u8")), ("label", np.dtype("u1")),
            ("pad", np.dtype("u1")))  # fmt: skip
ENTRY_BYTES = sum(dtype.itemsize for _, dtype in _COLUMNS)


@dataclass(frozen=True, slots=True)
class Entries:
    """Entries as columns: the two words of the tag hash, the clear label, the label pad.

    Columns rather than records: numpy sorts, gathers and compares them at
    full speed, where a packed record array is several times slower.
    """

    wide: NDArray[np.uint64]
    low: NDArray[np.uint64]
    label: NDArray[np.uint8]
    pad: NDArray[np.uint8]

    @classmethod
    def empty(cls) -> Entries:
        return cls.concatenate([])

    @classmethod
    def concatenate(cls, parts: Sequence[Entries]) -> Entries:
        if not parts:
            words, bytes_ = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint8)
            return cls(words, words, bytes_, bytes_)
        return cls(
            np.concatenate([part.wide for part in parts]),
            np.concatenate([part.low for part in parts]),
            np.concatenate([part.label for part in parts]),
            np.concatenate([part.pad for part in parts]),
        )

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, index: slice | NDArray[np.intp]) -> Entries:
        return Entries(self.wide[index], self.low[index], self.label[index], self.pad[index])


class Run(Protocol):
    """Distinct entries in tag-hash order, read a slice at a time."""

    def __len__(self) -> int: ...

    def read(self, start: int, count: int) -> Entries: ...


class MemoryRun:
    def __init__(self, entries: Entries) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def read(self, start: int, count: int) -> Entries:
        return self._entries[start : start + count]


class FileRun:
    """A run in an anonymous temporary file, column after column; gone once closed."""

    def __init__(self, entries: Entries, directory: Path | None) -> None:
        # Lives as long as the run, which `close` ends.
        self._file: BinaryIO = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self._count = len(entries)
        for name, _ in _COLUMNS:
            self._file.write(getattr(entries, name).tobytes())

    def __len__(self) -> int:
        return self._count

    def read(self, start: int, count: int) -> Entries:
        count = min(count, self._count - start)
        columns: list[NDArray[Any]] = []
        column_start = 0
        for _, dtype in _COLUMNS:
            self._file.seek(column_start + start * dtype.itemsize)
            columns.append(np.frombuffer(self._file.read(count * dtype.itemsize), dtype=dtype))
            column_start += self._count * dtype.itemsize
        return Entries(*columns)

    def close(self) -> None:
        self._file.close()


def distinct(entries: Entries) -> Entries:
    """One entry per distinct tag hash, in (wide, low) order, labels OR-ed.

    Two different outputs share a 128-bit hash with probability about
    N² / 2^129 (below 2^-79 at 30M entries); they would be merged. Duplicates
    of one output have the same pad, so which copy's pad is kept does not matter.
    """
    if len(entries) == 0:
        return entries
    order = np.argsort(entries.wide)
    wide = entries.wide[order]
    low = entries.low[order]
    _sort_ties_by_low(order, wide, low)
    is_new = np.ones(len(order), dtype=np.bool_)
    is_new[1:] = (wide[1:] != wide[:-1]) | (low[1:] != low[:-1])
    if is_new.all():
        return Entries(wide, low, entries.label[order], entries.pad[order])
    starts = np.flatnonzero(is_new)
    return Entries(
        wide=wide[starts],
        low=low[starts],
        label=np.bitwise_or.reduceat(entries.label[order], starts),
        pad=entries.pad[order[starts]],
    )


def merge(runs: Sequence[Run], budget: int = DEFAULT_RUN_PAIRS) -> Iterator[Entries]:
    """The distinct entries of all `runs`, in order, about `budget` entries per slice.

    Each round reads a window from every run and emits what lies at or below
    the smallest *last* key among runs that have more to read: nothing later
    in any run can sort before it, and every copy of a key (at most one per
    run) is in this round, so duplicates across runs still meet.
    """
    runs = [run for run in runs if len(run)]
    if len(runs) == 1:  # already distinct and in order
        for start in range(0, len(runs[0]), budget):
            yield runs[0].read(start, budget)
        return
    window = max(_MIN_WINDOW, budget // max(1, len(runs)))
    cursors = [_Cursor(run, window) for run in runs]
    while True:
        live = [c for c in cursors if c.fill()]
        if not live:
            return
        waiting = [c.last_key() for c in live if c.has_more()]
        bound = min(waiting) if waiting else None
        yield distinct(Entries.concatenate([c.take_through(bound) for c in live]))


class _Cursor:
    def __init__(self, run: Run, window: int) -> None:
        self._run = run
        self._window = window
        self._position = 0
        self._buffer = Entries.empty()

    def fill(self) -> bool:
        """Read the next window if the current one is used up; False when the run is."""
        if len(self._buffer) == 0 and self.has_more():
            self._buffer = self._run.read(self._position, self._window)
            self._position += len(self._buffer)
        return len(self._buffer) > 0

    def has_more(self) -> bool:
        return self._position < len(self._run)

    def last_key(self) -> tuple[int, int]:
        return int(self._buffer.wide[-1]), int(self._buffer.low[-1])

    def take_through(self, bound: tuple[int, int] | None) -> Entries:
        """The buffered entries with key ≤ `bound` (all of them for None)."""
        if bound is None:
            count = len(self._buffer)
        else:
            wide = np.uint64(bound[0])
            first = int(np.searchsorted(self._buffer.wide, wide, side="left"))
            stop = int(np.searchsorted(self._buffer.wide, wide, side="right"))
            ties = self._buffer.low[first:stop]
            count = first + int(np.searchsorted(ties, np.uint64(bound[1]), side="right"))
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken


def _sort_ties_by_low(
    order: NDArray[np.intp], wide: NDArray[np.uint64], low: NDArray[np.uint64]
) -> None:
    """Within runs of equal `wide`, reorder by `low`, in place.

    Sorting by the first word alone is twice as fast as a two-key sort; runs of
    equal first words are duplicates of one output (or, rarely, outputs that
    share 64 bits), and only they need the second key so duplicates end up adjacent.
    """
    tied = np.flatnonzero(wide[1:] == wide[:-1])
    if len(tied) == 0:
        return
    positions = np.union1d(tied, tied + 1)
    by_low = positions[np.lexsort((low[positions], wide[positions]))]
    order[positions] = order[by_low]
    low[positions] = low[by_low]
