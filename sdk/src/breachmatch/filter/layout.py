"""The byte layout of a filter body: header, block index, blocks.

    header   magic "BMFL", u16 format version, u8 M_LOG2, u8 rice bits,
             u8 log2(buckets per block), u64 entry count       (17 bytes, LE)
    index    per block: u32 entries, u32 unary bytes            (8 bytes each)
    blocks   per block: unary bytes | 5-byte remainders | 1-byte labels

Block j holds the entries whose bucket lies in ``[j·B, (j+1)·B)`` (B buckets
per block, a power of two), so its base tag ``j·B·2^40`` is known without
being stored and tags inside it are below ``B·2^40 ≤ 2^56``: they fit a uint64
while whole tags (up to 72 bits) would not. The index sits before the blocks
so a reader can seek to one block, or stream the body once and know every
block's length as it arrives.

The proof index ingest writes next to each body (see `proofs`):

    header   magic "BMPI", u16 version, u16 zero, u64 entry count N   (16 bytes)
    words    the first u64 word of every entry's tag hash, ascending (8 bytes each)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from breachmatch.filter.errors import FilterFormatError
from breachmatch.filter.golomb import REMAINDER_BYTES, RICE_BITS
from breachmatch.filter.tags import M_LOG2, MAX_ENTRIES, Tags

MAGIC = b"BMFL"
FORMAT_VERSION = 1
MIN_BLOCK_LOG2 = 12
MAX_BLOCK_LOG2 = 16
DEFAULT_BLOCK_BUCKETS = 1 << 14
#: Keeps a block's cumulative sums below 2^64 (see golomb.decode_sorted).
MAX_BLOCK_ENTRIES = 1 << 23
#: Bytes per entry outside the unary stream: remainder plus encrypted label.
ENTRY_BYTES = REMAINDER_BYTES + 1

_HEADER = struct.Struct("<4sHBBBQ")
HEADER_SIZE = _HEADER.size
_INDEX_DTYPE = np.dtype([("entries", "<u4"), ("unary_bytes", "<u4")])
INDEX_ENTRY_SIZE = _INDEX_DTYPE.itemsize

PROOF_MAGIC = b"BMPI"
PROOF_VERSION = 1
_PROOF_HEADER = struct.Struct("<4sHHQ")
PROOF_HEADER_SIZE = _PROOF_HEADER.size
#: The dtype of the proof index's words.
PROOF_WORD = np.dtype("<u8")


def proof_index_size(entry_count: int) -> int:
    return PROOF_HEADER_SIZE + PROOF_WORD.itemsize * entry_count


def pack_proof_header(entry_count: int) -> bytes:
    return _PROOF_HEADER.pack(PROOF_MAGIC, PROOF_VERSION, 0, entry_count)


def unpack_proof_header(data: bytes | memoryview) -> int:
    """The entry count of a proof index header; `FilterFormatError` if it is not one."""
    if len(data) < PROOF_HEADER_SIZE:
        raise FilterFormatError("proof index is shorter than its header")
    magic, version, zero, entry_count = _PROOF_HEADER.unpack_from(data)
    if (magic, version, zero) != (PROOF_MAGIC, PROOF_VERSION, 0):
        raise FilterFormatError("not a proof index (header)")
    return int(entry_count)


@dataclass(frozen=True, slots=True)
class FilterParameters:
    """The format choices a reader must agree with; published in the manifest."""

    format_version: int = FORMAT_VERSION
    m_log2: int = M_LOG2
    rice_bits: int = RICE_BITS
    block_buckets: int = DEFAULT_BLOCK_BUCKETS

    def __post_init__(self) -> None:
        if (self.format_version, self.m_log2, self.rice_bits) != (
            FORMAT_VERSION,
            M_LOG2,
            RICE_BITS,
        ):
            raise FilterFormatError("unsupported filter format version or parameters")
        allowed = {1 << k for k in range(MIN_BLOCK_LOG2, MAX_BLOCK_LOG2 + 1)}
        if self.block_buckets not in allowed:
            raise FilterFormatError("block_buckets must be a power of two in [2^12, 2^16]")

    @property
    def block_log2(self) -> int:
        return self.block_buckets.bit_length() - 1

    def locate(self, tags: Tags) -> tuple[NDArray[np.int64], NDArray[np.uint64]]:
        """Each tag's block, and its offset from the block's base tag (below 2^56)."""
        block = (tags.bucket >> np.uint64(self.block_log2)).astype(np.int64)
        in_block = tags.bucket & np.uint64(self.block_buckets - 1)
        return block, (in_block << np.uint64(self.m_log2)) | tags.remainder


@dataclass(frozen=True, slots=True)
class BodyHeader:
    entry_count: int
    parameters: FilterParameters

    def __post_init__(self) -> None:
        if not 0 <= self.entry_count <= MAX_ENTRIES:
            raise FilterFormatError("entry count is outside [0, 2^32)")

    @property
    def block_count(self) -> int:
        return -(-self.entry_count // self.parameters.block_buckets)

    @property
    def index_size(self) -> int:
        return self.block_count * INDEX_ENTRY_SIZE

    def block_buckets(self, block: int) -> int:
        """Buckets block `block` covers: B, except for a shorter last block."""
        start = block * self.parameters.block_buckets
        return min(self.parameters.block_buckets, self.entry_count - start)

    def pack(self) -> bytes:
        p = self.parameters
        return _HEADER.pack(
            MAGIC, p.format_version, p.m_log2, p.rice_bits, p.block_log2, self.entry_count
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> BodyHeader:
        if len(data) < HEADER_SIZE:
            raise FilterFormatError("body is shorter than its header")
        magic, version, m_log2, rice_bits, block_log2, entry_count = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise FilterFormatError("body does not start with the filter magic")
        if not MIN_BLOCK_LOG2 <= block_log2 <= MAX_BLOCK_LOG2:
            raise FilterFormatError("block size in the header is out of range")
        parameters = FilterParameters(version, m_log2, rice_bits, 1 << block_log2)
        return cls(entry_count=entry_count, parameters=parameters)


@dataclass(frozen=True)
class BodyLayout:
    """Header plus index: where every block starts and how it splits."""

    header: BodyHeader
    entries: NDArray[np.int64]
    unary_bytes: NDArray[np.int64]

    def __post_init__(self) -> None:
        if len(self.entries) != self.header.block_count:
            raise FilterFormatError("block index length disagrees with the entry count")
        if int(self.entries.sum()) != self.header.entry_count:
            raise FilterFormatError("block entry counts do not add up to the entry count")
        if len(self.entries) and int(self.entries.max()) > MAX_BLOCK_ENTRIES:
            raise FilterFormatError("a block holds more entries than the format allows")

    @classmethod
    def unpack(cls, header: BodyHeader, index: bytes | memoryview) -> BodyLayout:
        if len(index) != header.index_size:
            raise FilterFormatError("body is shorter than its block index")
        rows = np.frombuffer(index, dtype=_INDEX_DTYPE)
        return cls(
            header=header,
            entries=rows["entries"].astype(np.int64),
            unary_bytes=rows["unary_bytes"].astype(np.int64),
        )

    def pack_index(self) -> bytes:
        rows = np.empty(len(self.entries), dtype=_INDEX_DTYPE)
        rows["entries"] = self.entries
        rows["unary_bytes"] = self.unary_bytes
        return rows.tobytes()

    @cached_property
    def block_sizes(self) -> NDArray[np.int64]:
        return self.unary_bytes + ENTRY_BYTES * self.entries

    @cached_property
    def block_offsets(self) -> NDArray[np.int64]:
        """Offset of every block from the start of the body, plus the body size."""
        first = HEADER_SIZE + self.header.index_size
        offsets = np.empty(len(self.block_sizes) + 1, dtype=np.int64)
        offsets[0] = first
        np.cumsum(self.block_sizes, out=offsets[1:])
        offsets[1:] += first
        return offsets

    @property
    def body_size(self) -> int:
        return int(self.block_offsets[-1])
