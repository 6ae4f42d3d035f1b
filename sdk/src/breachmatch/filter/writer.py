"""Build a filter body from (OPRF output, label) pairs, in any order.

Ingest feeds millions of pairs in batches. The writer keeps them as 18-byte
entries (tag hash, label, label pad) — never a Python object per entry — and
at most `run_pairs` of them in memory: beyond that it sorts what it holds into
a run on disk (`runs`). At `finish`, when the entry count N, and with it the
tag range ``[0, N · 2^40)``, is finally known, it merges the runs twice — once
to count the distinct outputs, once to encode them block by block — so its
memory stays bounded however large the dump (a few hundred MB at the default
run size, for 10 million rows as for 10 thousand).

The body depends only on the *set* of pairs: duplicates of one output are
merged (their labels OR-ed) and every block is sorted by a key holding the
whole entry, so the same pairs in any order, split into any batches or runs,
give byte-identical bodies — ingest can re-run and publish the same artifact.

Two different outputs that land on the same tag (expected N / 2^41 times per
filter, about 1.4e-5 at 30M entries) both stay, ordered by their encrypted
label byte; the reader then ORs the labels it decrypts for that tag, so either
holder sees all of its own categories and possibly some extra ones — never fewer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np
from numpy.typing import NDArray

from breachmatch.filter.digest import BodyDigest
from breachmatch.filter.golomb import encode_sorted
from breachmatch.filter.layout import (
    DEFAULT_BLOCK_BUCKETS,
    PROOF_WORD,
    BodyHeader,
    BodyLayout,
    FilterParameters,
    pack_proof_header,
)
from breachmatch.filter.runs import (
    DEFAULT_RUN_PAIRS,
    Entries,
    FileRun,
    MemoryRun,
    Run,
    distinct,
    merge,
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
#: Encoded blocks stay in memory up to this size, then move to a temporary file.
_SPOOL_BYTES = 64 << 20
_COPY_BYTES = 1 << 20
#: Entries per slice of the final merge: bounds the encoder's working arrays.
_SLICE_PAIRS = 1 << 18


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


class FilterWriter:
    """Collects pairs with `add`/`add_batch`/`add_keys`, then writes once with `finish`.

    `run_pairs` bounds the pairs held in memory (see `runs`); sorted runs go
    to anonymous temporary files in `spill_dir` (the system default when None),
    about 18 bytes per distinct pair, and are gone once `finish` returns.
    """

    def __init__(
        self,
        block_buckets: int = DEFAULT_BLOCK_BUCKETS,
        run_pairs: int = DEFAULT_RUN_PAIRS,
        spill_dir: Path | None = None,
    ) -> None:
        if run_pairs < 1:
            raise ValueError("run_pairs must be at least 1")
        self._parameters = FilterParameters(block_buckets=block_buckets)
        self._run_pairs = run_pairs
        self._spill_dir = spill_dir
        self._pending: list[Entries] = []
        self._pending_count = 0
        self._spilled: list[FileRun] = []
        self._added = 0
        self._finished = False

    def __len__(self) -> int:
        """Pairs added so far, duplicates included."""
        return self._added

    @property
    def spilled_runs(self) -> int:
        """Sorted runs written to disk so far."""
        return len(self._spilled)

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
        words = keys.tag_hash.astype(np.uint64, copy=False)
        batch = Entries(words[:, 0].copy(), words[:, 1].copy(), checked, keys.pad.copy())
        self._pending.append(batch)
        self._pending_count += len(batch)
        self._added += len(batch)
        if self._pending_count >= self._run_pairs:
            self._spilled.append(FileRun(self._take_pending(), self._spill_dir))

    def finish(self, sink: BinaryIO, proof_sink: BinaryIO | None = None) -> BodySummary:
        """Write the body to `sink` and summarise it; the writer is then spent.

        With ``proof_sink``, the body's proof index (see `proofs`) is written
        there too, in the same pass: the merge yields the entries in the
        index's order.
        """
        if self._finished:
            raise RuntimeError("the filter writer has already finished")
        self._finished = True
        try:
            runs: list[Run] = [*self._spilled, MemoryRun(self._take_pending())]
            entry_count = sum(len(part) for part in merge(runs, _SLICE_PAIRS))
            if entry_count > MAX_ENTRIES:
                raise ValueError("a filter holds at most 2^32 - 1 distinct outputs")
            header = BodyHeader(entry_count=entry_count, parameters=self._parameters)
            spool_dir = None if self._spill_dir is None else str(self._spill_dir)
            with tempfile.SpooledTemporaryFile(_SPOOL_BYTES, dir=spool_dir) as blocks:
                encoder = _BlockEncoder(header, blocks)
                if proof_sink is not None:
                    proof_sink.write(pack_proof_header(entry_count))
                for part in merge(runs, _SLICE_PAIRS):
                    encoder.add(part)
                    if proof_sink is not None:
                        proof_sink.write(part.wide.astype(PROOF_WORD).tobytes())
                layout = encoder.close()
                self._close_runs()
                digest = BodyDigest()
                for head in (header.pack(), layout.pack_index()):
                    digest.update(head)
                    sink.write(head)
                blocks.seek(0)
                while chunk := blocks.read(_COPY_BYTES):
                    digest.update(chunk)
                    sink.write(chunk)
        finally:
            self._close_runs()
        return BodySummary(
            entry_count=entry_count,
            parameters=self._parameters,
            body_size=digest.size,
            body_sha256=digest.hexdigest(),
            category_counts=encoder.category_counts,
        )

    def _take_pending(self) -> Entries:
        """The pairs held in memory as one sorted, distinct run; the buffer is emptied."""
        pending = Entries.concatenate(self._pending)
        self._pending, self._pending_count = [], 0
        return distinct(pending)

    def _close_runs(self) -> None:
        for run in self._spilled:
            run.close()
        self._spilled = []


class _BlockEncoder:
    """Rice-codes the blocks of a body as its distinct entries stream by in order.

    Blocks are contiguous in the stream because buckets grow with the tag
    hash's first word, so every block before the last one a slice touches is
    complete; the last one is carried over to the next slice. Each entry
    becomes one uint64 sort key — its offset in the block (at most 56 bits)
    above its encrypted label byte — so sorting the keys orders a block by tag
    and, for equal tags, by label byte: canonically.
    """

    def __init__(self, header: BodyHeader, sink: IO[bytes]) -> None:
        self._header = header
        self._sink = sink
        self._carry = Entries.empty()
        self._next_block = 0
        self._entries = np.zeros(header.block_count, dtype=np.int64)
        self._unary_bytes = np.zeros(header.block_count, dtype=np.int64)
        self.category_counts = dict.fromkeys(Category.legend(), 0)

    def add(self, entries: Entries) -> None:
        for name, bit in Category.legend().items():
            self.category_counts[name] += int(np.count_nonzero(entries.label & bit))
        pending = Entries.concatenate([self._carry, entries])
        if len(pending) == 0:
            return
        block_of_entry = self._locate(pending)[0]
        last_block = int(block_of_entry[-1])
        complete = int(np.searchsorted(block_of_entry, last_block))
        self._encode(pending[:complete], last_block)
        self._carry = pending[complete:]

    def close(self) -> BodyLayout:
        self._encode(self._carry, self._header.block_count)
        return BodyLayout(self._header, self._entries, self._unary_bytes)

    def _locate(self, entries: Entries) -> tuple[NDArray[np.int64], NDArray[np.uint64]]:
        tags = Tags.from_words(entries.wide, entries.low, self._header.entry_count)
        return self._header.parameters.locate(tags)

    def _encode(self, entries: Entries, stop_block: int) -> None:
        """Write blocks `_next_block` up to `stop_block`, which hold exactly `entries`."""
        block_of_entry, offsets = self._locate(entries)
        encrypted = (entries.label ^ entries.pad).astype(np.uint64)
        sort_keys = (offsets << _LABEL_BITS) | encrypted
        blocks = np.arange(self._next_block, stop_block + 1)
        bounds = np.searchsorted(block_of_entry, blocks)
        for block, start, stop in zip(blocks[:-1], bounds[:-1], bounds[1:], strict=True):
            keys = np.sort(sort_keys[start:stop])
            unary, remainders = encode_sorted(keys >> _LABEL_BITS)
            self._entries[block] = len(keys)
            self._unary_bytes[block] = len(unary)
            for part in (unary, remainders, keys.astype(np.uint8).tobytes()):
                self._sink.write(part)
        self._next_block = stop_block


def _checked_labels(labels: Labels, count: int) -> NDArray[np.uint8]:
    values = np.asarray(labels, dtype=np.int64)
    if values.shape != (count,):
        raise ValueError(f"expected {count} labels, one per output")
    outside = np.flatnonzero((values < 0) | ((values & ~LABEL_MASK) != 0))
    if len(outside):
        raise ValueError(f"label #{int(outside[0])} has bits outside the category legend")
    return values.astype(np.uint8)
