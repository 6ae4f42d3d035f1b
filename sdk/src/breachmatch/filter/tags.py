"""From an OPRF output to a filter tag and a label pad.

Both sides of a match derive the same things from a token (a 64-byte RFC 9497
output): ingest when it builds a breach filter, the hospital when it looks its
patients up. Two domain-separated BLAKE2b hashes (distinct personalisation
strings, so neither value says anything about the other):

* the *tag hash* (128 bits). Its first 64-bit word picks the entry's bucket in
  ``[0, N)``; the low 40 bits of the second word are the remainder. The tag is
  ``bucket · 2^40 + remainder``, uniform in ``[0, N · M)`` with ``M = 2^40``.
  The hash does not depend on N, which the writer only learns at the end and
  which differs per breach, so a hospital's token cache can keep these
  16 bytes per token and check every future breach without hashing again.
* the *label pad* (one byte): a one-time pad for the entry's category byte.
  Only a holder of the output can compute it, so a hospital reads the labels of
  its own matches and nothing else.

False matches: a token that is not in the filter hits one of at most N occupied
tags out of ``N · 2^40``. The bucket is ``floor(h · N / 2^64)`` (a multiply-high
reduction), so a bucket is chosen with probability at most ``ceil(2^64/N) / 2^64``
and the false-match probability per queried token is at most
``N · ceil(2^64/N) / 2^104 < (1 + N/2^64) · 2^-40`` — that is 2^-40 ≈ 9.095e-13
to within one part in 10^11 for any N up to 2^32 - 1. `false_match_bound` gives
the exact figure.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from breachmatch.oprf import OUTPUT_SIZE
from breachmatch.records import Category

#: log2 of M, the tag space per entry: the per-query false-match rate is 2^-M_LOG2.
M_LOG2 = 40
#: The multiply-high bucket mapping needs N < 2^32 (see `bucket_of`).
MAX_ENTRIES = (1 << 32) - 1
#: Every category bit the legend defines; other bits of a label are never set.
LABEL_MASK = functools.reduce(operator.or_, Category.legend().values(), 0)

_TAG_DOMAIN = b"bm.filter.tag.v1"
_PAD_DOMAIN = b"bm.filter.pad.v1"
_TAG_HASH = hashlib.blake2b(digest_size=16, person=_TAG_DOMAIN)
_PAD_HASH = hashlib.blake2b(digest_size=1, person=_PAD_DOMAIN)
_REMAINDER_MASK = np.uint64((1 << M_LOG2) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
#: Outputs hashed per pass: bounds the transient bytes objects of one pass.
_DERIVE_CHUNK = 1 << 16

#: OPRF outputs as the OPRF module returns them, or an (n, 64) uint8 array.
Outputs = Sequence[bytes] | NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Tags:
    """Tags of some tokens for one filter size N: ``bucket · 2^40 + remainder``.

    Kept as two uint64 arrays because the tag itself needs up to 72 bits.
    """

    bucket: NDArray[np.uint64]
    remainder: NDArray[np.uint64]

    @classmethod
    def from_words(
        cls, wide: NDArray[np.uint64], low: NDArray[np.uint64], entry_count: int
    ) -> Tags:
        """Tags from the two words of tag hashes, for a filter of `entry_count`."""
        return cls(bucket=bucket_of(wide, entry_count), remainder=low & _REMAINDER_MASK)


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """What the filter uses of n OPRF outputs, independent of any breach.

    ``tag_hash`` is (n, 2) uint64; its 128 bits also identify an output when
    the writer merges duplicates. ``pad`` is the label pad of each output.
    """

    tag_hash: NDArray[np.uint64]
    pad: NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.pad)

    def tags(self, entry_count: int) -> Tags:
        """The tags these tokens have in a filter of `entry_count` entries."""
        return Tags.from_words(self.tag_hash[:, 0], self.tag_hash[:, 1], entry_count)


def bucket_of(wide: NDArray[np.uint64], entry_count: int) -> NDArray[np.uint64]:
    """``floor(wide · N / 2^64)`` for every element, exactly, in uint64 arithmetic.

    Splitting `wide` into 32-bit halves keeps every partial product below 2^64
    as long as N < 2^32; the low half's contribution is added before the final
    shift, and since everything dropped is a fraction below one the result is
    the exact floor. Monotone in `wide`, which the writer relies on.
    """
    if not 0 <= entry_count <= MAX_ENTRIES:
        raise ValueError("entry_count is outside [0, 2^32)")
    n = np.uint64(entry_count)
    high = (wide >> _SHIFT32) * n
    low = ((wide & _LOW32) * n) >> _SHIFT32
    return (high + low) >> _SHIFT32


def derive_keys(outputs: Outputs) -> TokenKeys:
    """Hash every output into its tag hash and label pad (about 1 µs each)."""
    tag_hashes = bytearray()
    pads = bytearray()
    for chunk in _output_chunks(outputs):
        tags, chunk_pads = _hash_chunk(chunk)
        tag_hashes += tags
        pads += chunk_pads
    return TokenKeys(
        tag_hash=_little_endian_words(tag_hashes).reshape(-1, 2),
        pad=np.frombuffer(pads, dtype=np.uint8),
    )


def false_match_bound(entry_count: int) -> float:
    """Upper bound on P(a token not in the filter matches), for N entries."""
    if entry_count == 0:
        return 0.0
    per_bucket = -(-(1 << 64) // entry_count)
    return float(Fraction(entry_count * per_bucket, 1 << (64 + M_LOG2)))


def _hash_chunk(data: bytes) -> tuple[bytes, bytes]:
    tags: list[bytes] = []
    pads: list[bytes] = []
    for start in range(0, len(data), OUTPUT_SIZE):
        row = data[start : start + OUTPUT_SIZE]
        tag = _TAG_HASH.copy()
        tag.update(row)
        tags.append(tag.digest())
        pad = _PAD_HASH.copy()
        pad.update(row)
        pads.append(pad.digest())
    return b"".join(tags), b"".join(pads)


def _output_chunks(outputs: Outputs) -> Iterator[bytes]:
    """Concatenated outputs, `_DERIVE_CHUNK` at a time, each length checked."""
    if isinstance(outputs, bytes | bytearray | memoryview):
        raise TypeError("pass a sequence of OPRF outputs, not a single bytes object")
    if isinstance(outputs, np.ndarray):
        if outputs.dtype != np.uint8 or outputs.ndim != 2 or outputs.shape[1] != OUTPUT_SIZE:
            raise ValueError(f"OPRF output array must be uint8 of shape (n, {OUTPUT_SIZE})")
        for start in range(0, len(outputs), _DERIVE_CHUNK):
            yield outputs[start : start + _DERIVE_CHUNK].tobytes()
        return
    for start in range(0, len(outputs), _DERIVE_CHUNK):
        chunk = outputs[start : start + _DERIVE_CHUNK]
        if not set(map(len, chunk)) <= {OUTPUT_SIZE}:
            bad = next(i for i, o in enumerate(chunk) if len(o) != OUTPUT_SIZE)
            raise ValueError(f"OPRF output #{start + bad} is not {OUTPUT_SIZE} bytes long")
        yield b"".join(chunk)


def _little_endian_words(data: bytes | bytearray) -> NDArray[np.uint64]:
    """Bytes as little-endian uint64 words on any host (tags must not depend on it)."""
    return np.frombuffer(data, dtype="<u8").astype(np.uint64, copy=False)
