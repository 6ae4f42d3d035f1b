"""Golomb-Rice coding of one block's sorted tags, vectorised with numpy.

Tags are uniform, so the gaps between sorted tags are close to geometric with
mean ``M = 2^40``; Rice coding with parameter 40 stores each gap as a unary
quotient (about 1.58 bits on average) and a 40-bit remainder — about 41.6 bits
per entry against an entropy bound of ``log2(e·M) ≈ 41.44``. With parameter 40
the remainders are whole bytes (five, little-endian), so neither side ever
shifts bits one entry at a time: decoding is `unpackbits`, `flatnonzero`,
`diff` and `cumsum` over the block.

The unary stream writes each quotient q as q zero bits and a one bit, most
significant bit first, zero-padded to a whole byte.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from breachmatch.filter.errors import FilterFormatError

RICE_BITS = 40
REMAINDER_BYTES = RICE_BITS // 8
_SHIFT = np.uint64(RICE_BITS)
_MASK = np.uint64((1 << RICE_BITS) - 1)


def encode_sorted(values: NDArray[np.uint64]) -> tuple[bytes, bytes]:
    """Rice-code non-decreasing values, the first as its gap from zero.

    Returns (unary stream, remainders).
    """
    if len(values) == 0:
        return b"", b""
    gaps = np.diff(values, prepend=np.uint64(0))
    stops = np.cumsum((gaps >> _SHIFT).astype(np.int64) + 1) - 1
    bits = np.zeros(int(stops[-1]) + 1, dtype=np.uint8)
    bits[stops] = 1
    remainders = (gaps & _MASK).astype("<u8").view(np.uint8).reshape(-1, 8)
    return np.packbits(bits).tobytes(), remainders[:, :REMAINDER_BYTES].tobytes()


def decode_sorted(
    unary: bytes | memoryview, remainders: bytes | memoryview, count: int, limit: int
) -> NDArray[np.uint64]:
    """Inverse of `encode_sorted` for `count` values, all below `limit`.

    `limit` (at most 2^56) and ``count ≤ 2^23`` keep every partial sum below
    2^64, so a corrupt stream is reported instead of wrapping around.
    """
    if len(remainders) != count * REMAINDER_BYTES:
        raise FilterFormatError("remainder section has the wrong length")
    bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8))
    stops = np.flatnonzero(bits)
    if len(stops) != count:
        raise FilterFormatError("unary stream holds the wrong number of entries")
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    if len(unary) != int(stops[-1]) // 8 + 1:
        raise FilterFormatError("unary stream has trailing bytes")
    quotients = np.diff(stops, prepend=-1) - 1
    if int(quotients.sum()) > limit >> RICE_BITS:
        raise FilterFormatError("block tags exceed the block's range")
    words = np.zeros((count, 8), dtype=np.uint8)
    words[:, :REMAINDER_BYTES] = np.frombuffer(remainders, dtype=np.uint8).reshape(-1, 5)
    low = words.view("<u8").ravel().astype(np.uint64, copy=False)
    gaps = (quotients.astype(np.uint64) << _SHIFT) | low
    values = np.cumsum(gaps, dtype=np.uint64)
    if int(values[-1]) >= limit:
        raise FilterFormatError("block tags exceed the block's range")
    return values
