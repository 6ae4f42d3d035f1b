"""Build a filter body from (OPRF output, label) pairs, in any order.

Ingest feeds millions of pairs in batches. The writer keeps 18 bytes per pair
in three growing byte buffers (tag hash, label pad, label) — never a Python
object per entry — and does all the work at `finish`, when the entry count N,
and with it the tag range ``[0, N · 2^40)``, is finally known.

The body depends only on the *set* of pairs: duplicates of one output are
merged (their labels OR-ed) and every block is sorted by a key holding the
whole entry, so the same pairs in any order, split into any batches, give
byte-identical bodies — ingest can re-run and publish the same artifact.

Two different outputs that land on the same tag (expected N / 2^41 times per
filter, about 1.4e-5 at 30M entries) both stay, ordered by their encrypted
label byte; the reader then ORs the labels it decrypts for that tag, so either
holder sees all of its own categories and possibly some extra ones — never fewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from breachmatch.filter.digest import BodyDigest
from breachmatch.filter.golomb import encode_sorted
from breachmatch.filter.layout import (
    DEFAULT_BLOCK_BUCKETS,
    BodyHeader,
    BodyLayout,
    FilterParameters,
)
from breachmatch.filter.tags import (
    LABEL_MASK,
    MAX_ENTRIES,
    Outputs,
    Tags,
    TokenKeys,
    derive_keys,
)
from breachmatch.records import Category

#: Labels of a batch: one int (a `Category`) per output.
Labels = Sequence[int] | NDArray[np.integer]

_LABEL_BITS = np.uint64(8)


@dataclass(frozen=True, slots=True)
class BodySummary:
    """What the manifest must state about a body the writer produced.

    `category_counts` counts distinct outputs (after merging) per category.
    """

    entry_count: int
    parameters: FilterParameters
    body_size: int
    body_sha256: str
    category_counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Entries:
    """The distinct outputs, sorted by tag hash, with merged labels."""

    wide: NDArray[np.uint64]
    low: NDArray[np.uint64]
    label: NDArray[np.uint8]
    pad: NDArray[np.uint8]


class FilterWriter:
    """Collects pairs with `add`/`add_batch`/`add_keys`, then writes once with `finish`."""

    def __init__(self, block_buckets: int = DEFAULT_BLOCK_BUCKETS) -> None:
        self._parameters = FilterParameters(block_buckets=block_buckets)
        self._tag_hash = bytearray()
        self._pad = bytearray()
        self._label = bytearray()
        self._finished = False

    def __len__(self) -> int:
        """Pairs added so far, duplicates included."""
        return len(self._label)

    def add(self, output: bytes, label: Category | int) -> None:
        """One pair; prefer `add_batch` for more than a handful."""
        self.add_batch([output], [int(label)])

    def add_batch(self, outputs: Outputs, labels: Labels) -> None:
        self.add_keys(derive_keys(outputs), labels)

    def add_keys(self, keys: TokenKeys, labels: Labels) -> None:
        """Pairs whose outputs were already hashed (`derive_keys`), e.g. in a worker."""
        checked = _checked_labels(labels, len(keys))
        if keys.tag_hash.shape != (len(keys), 2):
            raise ValueError("tag hashes must be an (n, 2) array, one row per pad")
        if self._finished:
            raise RuntimeError("the filter writer has already finished")
        self._tag_hash += keys.tag_hash.astype(np.uint64, copy=False).tobytes()
        self._pad += keys.pad.tobytes()
        self._label += checked.tobytes()

    def finish(self, sink: BinaryIO) -> BodySummary:
        """Write the body to `sink` and summarise it; the writer is then spent."""
        if self._finished:
            raise RuntimeError("the filter writer has already finished")
        self._finished = True
        entries = self._distinct_entries()
        self._tag_hash, self._pad, self._label = bytearray(), bytearray(), bytearray()
        entry_count = len(entries.label)
        if entry_count > MAX_ENTRIES:
            raise ValueError("a filter holds at most 2^32 - 1 distinct outputs")
        header = BodyHeader(entry_count=entry_count, parameters=self._parameters)
        blocks, layout = _encode_blocks(header, entries)
        digest = BodyDigest()
        for part in (header.pack(), layout.pack_index(), *blocks):
            digest.update(part)
            sink.write(part)
        return BodySummary(
            entry_count=entry_count,
            parameters=self._parameters,
            body_size=digest.size,
            body_sha256=digest.hexdigest(),
            category_counts={
                name: int(np.count_nonzero(entries.label & bit))
                for name, bit in Category.legend().items()
            },
        )

    def _distinct_entries(self) -> _Entries:
        """One entry per distinct output (by its 128-bit tag hash), labels OR-ed.

        Two different outputs share a 128-bit hash with probability about
        N² / 2^129 (below 2^-79 at 30M entries); they would be merged.
        """
        hashes = np.frombuffer(self._tag_hash, dtype=np.uint64).reshape(-1, 2)
        labels = np.frombuffer(self._label, dtype=np.uint8)
        pads = np.frombuffer(self._pad, dtype=np.uint8)
        if len(labels) == 0:
            empty = np.zeros(0, dtype=np.uint64)
            return _Entries(empty, empty, np.zeros(0, np.uint8), np.zeros(0, np.uint8))
        first_words = np.ascontiguousarray(hashes[:, 0])
        order = np.argsort(first_words)
        wide = first_words[order]
        low = hashes[order, 1]
        _sort_ties_by_low(order, wide, low)
        is_new = np.ones(len(order), dtype=np.bool_)
        is_new[1:] = (wide[1:] != wide[:-1]) | (low[1:] != low[:-1])
        starts = np.flatnonzero(is_new)
        return _Entries(
            wide=wide[starts],
            low=low[starts],
            label=np.bitwise_or.reduceat(labels[order], starts),
            pad=pads[order[starts]],
        )


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


def _encode_blocks(header: BodyHeader, entries: _Entries) -> tuple[list[bytes], BodyLayout]:
    """Rice-code each block; blocks are contiguous because buckets grow with `wide`.

    Each entry becomes one uint64 sort key — its offset in the block (at most
    56 bits) above its encrypted label byte — so sorting the keys orders a
    block by tag and, for equal tags, by label byte: canonically.
    """
    tags = Tags.from_words(entries.wide, entries.low, header.entry_count)
    block_of_entry, offsets = header.parameters.locate(tags)
    encrypted = (entries.label ^ entries.pad).astype(np.uint64)
    sort_keys = (offsets << _LABEL_BITS) | encrypted
    bounds = np.searchsorted(block_of_entry, np.arange(header.block_count + 1))
    blocks: list[bytes] = []
    unary_sizes = np.zeros(header.block_count, dtype=np.int64)
    for block in range(header.block_count):
        keys = np.sort(sort_keys[bounds[block] : bounds[block + 1]])
        unary, remainders = encode_sorted(keys >> _LABEL_BITS)
        unary_sizes[block] = len(unary)
        blocks.append(unary + remainders + keys.astype(np.uint8).tobytes())
    layout = BodyLayout(header, np.diff(bounds).astype(np.int64), unary_sizes)
    return blocks, layout


def _checked_labels(labels: Labels, count: int) -> NDArray[np.uint8]:
    values = np.asarray(labels, dtype=np.int64)
    if values.shape != (count,):
        raise ValueError(f"expected {count} labels, one per output")
    outside = np.flatnonzero((values < 0) | ((values & ~LABEL_MASK) != 0))
    if len(outside):
        raise ValueError(f"label #{int(outside[0])} has bits outside the category legend")
    return values.astype(np.uint8)
