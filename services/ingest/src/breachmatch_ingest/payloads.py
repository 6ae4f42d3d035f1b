"""Byte layouts of work-queue chunks and their results (before sealing).

A *chunk* is a run of (OPRF input, label) pairs from the dump; its *result* is
what a worker made of it: per pair the filter's 16-byte tag hash, the
one-byte label pad, and the label. Workers derive the tag hash and pad
themselves (`breachmatch.filter.derive_keys`), so the 64-byte OPRF outputs
never leave the worker process and the coordinator only concatenates bytes.

Both layouts start with the chunk's identity (job id, attempt, index). The
identity is also in the message headers, where routing reads it, but only the
copy inside the sealed payload is authenticated: a payload moved to another
job or index is refused instead of silently landing in the wrong filter.

    header   magic(4) | u8 len(job id) | job id | u32 attempt | u32 index | u32 count
    chunk    labels(count) | u16 input lengths(count) | inputs
    result   tag hashes(16·count, little-endian u64 pairs) | pads(count) | labels(count)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from breachmatch.filter import TokenKeys

_CHUNK_MAGIC = b"BMC1"
_RESULT_MAGIC = b"BMR1"
_COUNTS = struct.Struct("<III")
_TAG_HASH_BYTES = 16
#: An OPRF input longer than this cannot be framed; `pipeline` never makes one.
MAX_INPUT_BYTES = 0xFFFF


class PayloadError(ValueError):
    """A decrypted payload is malformed or belongs to another chunk."""


@dataclass(frozen=True, slots=True)
class ChunkId:
    """Which chunk of which attempt of which job; the dedup id is built from it."""

    job_id: str
    attempt: int
    index: int

    @property
    def dedup_id(self) -> str:
        return f"{self.job_id}:{self.attempt}:{self.index}"


@dataclass(frozen=True, slots=True)
class ChunkResult:
    keys: TokenKeys
    labels: NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.labels)


def encode_chunk(chunk: ChunkId, inputs: list[bytes], labels: bytes) -> bytes:
    if len(inputs) != len(labels):
        raise ValueError("one label per OPRF input")
    lengths = [len(data) for data in inputs]
    if lengths and max(lengths) > MAX_INPUT_BYTES:
        raise ValueError("an OPRF input is too long to frame")
    return b"".join(
        (
            _header(_CHUNK_MAGIC, chunk, len(inputs)),
            labels,
            struct.pack(f"<{len(lengths)}H", *lengths),
            *inputs,
        )
    )


def decode_chunk(chunk: ChunkId, data: bytes) -> tuple[list[bytes], bytes]:
    """The (inputs, labels) of `chunk`; `PayloadError` unless the payload is exactly that."""
    count, offset = _read_header(_CHUNK_MAGIC, chunk, data)
    labels = data[offset : offset + count]
    offset += count
    length_bytes = data[offset : offset + 2 * count]
    offset += 2 * count
    if len(labels) != count or len(length_bytes) != 2 * count:
        raise PayloadError("chunk payload is truncated")
    inputs: list[bytes] = []
    for length in struct.unpack(f"<{count}H", length_bytes):
        inputs.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise PayloadError("chunk payload length disagrees with its framing")
    return inputs, labels


def encode_result(chunk: ChunkId, result: ChunkResult) -> bytes:
    count = len(result)
    if result.keys.tag_hash.shape != (count, 2) or len(result.keys.pad) != count:
        raise ValueError("one tag hash and one pad per label")
    return b"".join(
        (
            _header(_RESULT_MAGIC, chunk, count),
            result.keys.tag_hash.astype("<u8").tobytes(),
            result.keys.pad.astype(np.uint8).tobytes(),
            result.labels.astype(np.uint8).tobytes(),
        )
    )


def decode_result(chunk: ChunkId, data: bytes) -> ChunkResult:
    count, offset = _read_header(_RESULT_MAGIC, chunk, data)
    if len(data) - offset != count * (_TAG_HASH_BYTES + 2):
        raise PayloadError("result payload length disagrees with its count")
    hash_end = offset + _TAG_HASH_BYTES * count
    tag_hash = np.frombuffer(data, dtype="<u8", count=2 * count, offset=offset)
    pad = np.frombuffer(data, dtype=np.uint8, count=count, offset=hash_end)
    labels = np.frombuffer(data, dtype=np.uint8, count=count, offset=hash_end + count)
    keys = TokenKeys(tag_hash=tag_hash.astype(np.uint64).reshape(-1, 2), pad=pad)
    return ChunkResult(keys=keys, labels=labels)


def _header(magic: bytes, chunk: ChunkId, count: int) -> bytes:
    job = chunk.job_id.encode("ascii")
    return magic + bytes([len(job)]) + job + _COUNTS.pack(chunk.attempt, chunk.index, count)


def _read_header(magic: bytes, chunk: ChunkId, data: bytes) -> tuple[int, int]:
    """Check magic and identity; return (pair count, offset of the body)."""
    expected = _header(magic, chunk, 0)[:-4]
    if data[: len(expected)] != expected:
        raise PayloadError("payload belongs to another chunk or is not a payload of this kind")
    if len(data) < len(expected) + 4:
        raise PayloadError("payload is truncated")
    (count,) = struct.unpack_from("<I", data, len(expected))
    return count, len(expected) + 4
