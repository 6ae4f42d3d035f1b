"""The proof index: what tells a token someone holds apart from one they ground out.

A filter entry keeps only the tag ``bucket · 2^40 + remainder`` of a token's
128-bit tag hash — about 40 + log2 N of its bits, chosen so that an *honest*
query false-matches with probability 2^-40. That is plenty for a hospital
looking up its own patients, and worthless as evidence: whoever wants a token
that "is in the breach" can hash random 64-byte strings until one lands on an
occupied tag, about 2^40 BLAKE2b calls — minutes on a GPU.

So ingest also writes, next to the body, the first 64-bit word of every
entry's tag hash, sorted (`FilterWriter.finish`'s ``proof_sink``). A token
proves an entry only if its tag is in the filter *and* its first word is in
this index (`proven_labels`): then 104 bits of a genuine entry's hash match,
and a forger needs about 2^104 / N tries — more than 2^72 for any filter —
even with the index in hand. The index, like the filter, holds hashes of OPRF
outputs only, so it says nothing about anyone to whoever lacks the OPRF key.
The notifier reads it (it checks hospitals' proofs of match); hospitals never
need it and the matcher does not serve it.

The byte layout is in `layout`. The index's object name is the body's
(`Manifest.body_object`: breach id and body SHA-256) plus ``.proofs``
(`proof_object_name`), so the index of a republished body can never be taken
for the old one's, and no breach id can make a body's name an index's (a body
name ends in 64 hex digits).
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from breachmatch.closing import Closeable
from breachmatch.filter.errors import FilterFormatError
from breachmatch.filter.layout import (
    PROOF_HEADER_SIZE,
    PROOF_WORD,
    proof_index_size,
    unpack_proof_header,
)
from breachmatch.filter.manifest import Manifest
from breachmatch.filter.reader import NOT_FOUND, BreachFilter
from breachmatch.filter.tags import TokenKeys

#: Words compared per pass when checking the order (bounds the temporaries).
_CHECK_CHUNK = 1 << 20


def proof_object_name(manifest: Manifest) -> str:
    """Where ingest stores the proof index of ``manifest``'s body (bucket ``breach-filters``)."""
    return f"{manifest.body_object}.proofs"


class ProofIndex(Closeable):
    """A checked proof index, in memory or memory-mapped from a file."""

    def __init__(self, data: memoryview, entry_count: int, mapped: mmap.mmap | None = None) -> None:
        """Check header, size and order against the manifest's ``entry_count``."""
        if len(data) != proof_index_size(entry_count):
            raise FilterFormatError("proof index size does not fit the manifest's entry count")
        if unpack_proof_header(data) != entry_count:
            raise FilterFormatError("proof index entry count differs from the manifest's")
        self._data = data
        self._mapped = mapped
        self._words: NDArray[np.uint64] = np.frombuffer(
            data, dtype=PROOF_WORD, offset=PROOF_HEADER_SIZE
        )
        for start in range(0, entry_count, _CHECK_CHUNK):
            chunk = self._words[max(start - 1, 0) : start + _CHECK_CHUNK]
            if np.any(chunk[1:] < chunk[:-1]):
                raise FilterFormatError("proof index words are not in ascending order")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, entry_count: int) -> ProofIndex:
        return cls(memoryview(data).cast("B"), entry_count)

    @classmethod
    def open(cls, path: Path, entry_count: int) -> ProofIndex:
        """Memory-map an index file: lookups page in a few words, never the whole index."""
        with path.open("rb") as file:
            if path.stat().st_size != proof_index_size(entry_count):
                raise FilterFormatError("proof index file size does not fit the manifest")
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        try:
            return cls(view, entry_count, mapped)
        except BaseException:
            view.release()
            mapped.close()
            raise

    def close(self) -> None:
        del self._words
        self._data.release()
        if self._mapped is not None:
            self._mapped.close()

    def contains(self, keys: TokenKeys) -> NDArray[np.bool_]:
        """Whether each token's first tag-hash word is an entry's."""
        wanted = keys.tag_hash[:, 0]
        at = np.searchsorted(self._words, wanted)
        inside = at < len(self._words)
        found = np.zeros(len(wanted), dtype=np.bool_)
        found[inside] = self._words[at[inside]] == wanted[inside]
        return found


def proven_labels(body: BreachFilter, index: ProofIndex, keys: TokenKeys) -> NDArray[np.int16]:
    """The label of each token that proves an entry, `NOT_FOUND` for every other one."""
    labels = body.lookup_labels(keys)
    labels[~index.contains(keys)] = NOT_FOUND
    return labels
