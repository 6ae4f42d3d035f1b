"""Look tokens up in a breach filter without building it into Python objects.

Queried tags are grouped by block; each block any query falls in is decoded
once, vectorised (`golomb.decode_sorted`), and all its queries are matched with
`searchsorted`. A hospital checking a million tokens against a 30M-entry
filter therefore decodes each block once and holds one block's arrays at a time.

Two ways to read, both verifying the body against a manifest before trusting
an answer:

* `BreachFilter` over the whole body in memory or memory-mapped from a file:
  random access, so a handful of queries touches a handful of blocks;
* `lookup_stream` over the body's chunks as they arrive (e.g. a download), in
  one pass; the digest is checked at the end, before any result is returned.
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from breachmatch.closing import Closeable
from breachmatch.filter.digest import BodyDigest
from breachmatch.filter.errors import BodyDigestError, FilterFormatError
from breachmatch.filter.golomb import REMAINDER_BYTES, decode_sorted
from breachmatch.filter.layout import HEADER_SIZE, BodyHeader, BodyLayout, FilterParameters
from breachmatch.filter.manifest import Manifest, verify_body
from breachmatch.filter.tags import LABEL_MASK, M_LOG2, Outputs, Tags, TokenKeys, derive_keys
from breachmatch.records import Category

#: Reads the next `size` bytes of a body (the index, right after the header).
_Reader = Callable[[int], bytes | memoryview]

#: A decoded block: its sorted tags and their encrypted labels.
_Decoded = tuple[NDArray[np.uint64], NDArray[np.uint8]]

#: `lookup_labels` value of a token that is not in the filter.
NOT_FOUND = -1

_CATEGORIES = [Category(value) for value in range(LABEL_MASK + 1)]


class BreachFilter(Closeable):
    """A verified filter body with random access to its blocks."""

    def __init__(
        self,
        body: memoryview,
        manifest: Manifest,
        mapped: mmap.mmap | None = None,
        *,
        cached_blocks: int = 0,
    ) -> None:
        """Verify `body` against `manifest` (size, SHA-256, header) and index it.

        ``cached_blocks`` keeps that many decoded blocks (least recently used
        out): for a reader asked about one token at a time, such as the
        notifier checking each notice's proof, where decoding the token's
        block was most of the check. A block decodes to ~9 bytes per entry.
        """
        verify_body(manifest, body)
        self._body = body
        self._mapped = mapped
        self.manifest = manifest
        self._layout = _layout_for(
            manifest, body[:HEADER_SIZE], lambda size: body[HEADER_SIZE : HEADER_SIZE + size]
        )
        self._cache = functools.lru_cache(cached_blocks)(self._decode) if cached_blocks else None
        self._decoded: Callable[[int], _Decoded] = self._cache or self._decode

    @classmethod
    def from_bytes(
        cls, body: bytes | bytearray | memoryview, manifest: Manifest, *, cached_blocks: int = 0
    ) -> BreachFilter:
        return cls(memoryview(body).cast("B"), manifest, cached_blocks=cached_blocks)

    @classmethod
    def open(cls, path: Path, manifest: Manifest, *, cached_blocks: int = 0) -> BreachFilter:
        """Memory-map a body file: the filter is paged in, never copied whole."""
        with path.open("rb") as file:
            if path.stat().st_size != manifest.body_size:
                raise BodyDigestError("body file size differs from the manifest's")
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        try:
            return cls(view, manifest, mapped, cached_blocks=cached_blocks)
        except BaseException:
            view.release()
            mapped.close()
            raise

    def close(self) -> None:
        """Release a memory-mapped body; in-memory bodies need no closing."""
        if self._cache is not None:
            self._cache.cache_clear()
        self._body.release()
        if self._mapped is not None:
            self._mapped.close()

    @property
    def entry_count(self) -> int:
        return self._layout.header.entry_count

    @property
    def parameters(self) -> FilterParameters:
        return self._layout.header.parameters

    def contains_tags(self, tags: Tags) -> NDArray[np.bool_]:
        """Which tags (computed for this filter's entry count) are in it."""
        queries = _Queries.group(tags, self._layout.header)
        labels = _resolve(queries, self._blocks(queries), None)
        return np.asarray(labels != NOT_FOUND, dtype=np.bool_)

    def lookup_labels(self, keys: TokenKeys) -> NDArray[np.int16]:
        """Decrypted label per token, or `NOT_FOUND`: the vectorised `lookup`."""
        queries = _Queries.group(keys.tags(self.entry_count), self._layout.header)
        return _resolve(queries, self._blocks(queries), keys.pad)

    def lookup(self, outputs: Outputs | TokenKeys) -> list[Category | None]:
        """The exposed categories of each token in the breach, None for the others.

        Note that `Category(0)` (in the breach, no category recorded) is falsy:
        test the result with ``is None``.
        """
        keys = outputs if isinstance(outputs, TokenKeys) else derive_keys(outputs)
        return _categories(self.lookup_labels(keys))

    def _blocks(self, queries: _Queries) -> Iterator[tuple[int, Callable[[], _Decoded]]]:
        for block in queries.blocks.tolist():
            yield block, functools.partial(self._decoded, block)

    def _decode(self, block: int) -> _Decoded:
        offsets = self._layout.block_offsets
        tags, encrypted = _decode_block(
            self._layout, block, self._body[offsets[block] : offsets[block + 1]]
        )
        # Copied off the body (so `close` can release it) and frozen: a cached block is shared.
        encrypted = encrypted.copy()
        tags.flags.writeable = encrypted.flags.writeable = False
        return tags, encrypted


def lookup_stream(
    chunks: Iterable[bytes], manifest: Manifest, outputs: Outputs | TokenKeys
) -> list[Category | None]:
    """`BreachFilter.lookup` in one pass over the body's chunks, in order.

    Raises `BodyDigestError` after the last chunk if the body is not the one
    the manifest describes; no answer is returned from an unverified body.
    """
    keys = outputs if isinstance(outputs, TokenKeys) else derive_keys(outputs)
    stream = _ChunkStream(chunks)
    layout = _layout_for(manifest, stream.read(HEADER_SIZE), stream.read)
    queries = _Queries.group(keys.tags(manifest.entry_count), layout.header)
    blocks = (
        (block, functools.partial(_decode_block, layout, block, stream.read(size)))
        for block, size in enumerate(layout.block_sizes.tolist())
    )
    labels = _resolve(queries, blocks, keys.pad)
    stream.verify(manifest)
    return _categories(labels)


@dataclass(frozen=True, slots=True)
class _Queries:
    """Queried tags grouped by block, each as an offset from its block's base."""

    order: NDArray[np.intp]
    blocks: NDArray[np.int64]
    starts: NDArray[np.intp]
    offsets: NDArray[np.uint64]

    @classmethod
    def group(cls, tags: Tags, header: BodyHeader) -> _Queries:
        count = len(tags.bucket)
        if header.entry_count == 0:
            no_blocks = np.zeros(0, dtype=np.int64)
            return cls(np.arange(count), no_blocks, np.zeros(1, np.intp), tags.remainder)
        block, offsets = header.parameters.locate(tags)
        order = np.argsort(block, kind="stable")
        blocks, first = np.unique(block[order], return_index=True)
        return cls(order, blocks, np.append(first, count), offsets)


def _resolve(
    queries: _Queries,
    blocks: Iterable[tuple[int, Callable[[], _Decoded]]],
    pads: NDArray[np.uint8] | None,
) -> NDArray[np.int16]:
    """Match queries block by block; label per query (0 without pads) or NOT_FOUND.

    `blocks` yields (block number, its decoder) in ascending order and may
    include blocks no query needs (the stream does): they are skipped undecoded.
    """
    result = np.full(len(queries.order), NOT_FOUND, dtype=np.int16)
    position = {block: k for k, block in enumerate(queries.blocks.tolist())}
    for block, decode in blocks:
        k = position.get(block)
        if k is None:
            continue
        tags, encrypted = decode()
        members = queries.order[queries.starts[k] : queries.starts[k + 1]]
        wanted = queries.offsets[members]
        first = np.searchsorted(tags, wanted, side="left")
        last = np.searchsorted(tags, wanted, side="right")
        hit = last > first
        members, first, last = members[hit], first[hit], last[hit]
        result[members] = 0 if pads is None else _labels(encrypted, first, last, pads[members])
    return result


def _labels(
    encrypted: NDArray[np.uint8],
    first: NDArray[np.intp],
    last: NDArray[np.intp],
    pads: NDArray[np.uint8],
) -> NDArray[np.int16]:
    """Decrypt; a tag several outputs share yields the OR of all (see writer)."""
    labels = encrypted[first] ^ pads
    for m in np.flatnonzero(last - first > 1).tolist():
        labels[m] = np.bitwise_or.reduce(encrypted[first[m] : last[m]] ^ pads[m])
    return (labels & LABEL_MASK).astype(np.int16)


def _decode_block(layout: BodyLayout, block: int, data: memoryview | bytes) -> _Decoded:
    count = int(layout.entries[block])
    unary_end = int(layout.unary_bytes[block])
    labels_start = unary_end + REMAINDER_BYTES * count
    if len(data) != labels_start + count:
        raise FilterFormatError("block is shorter than its index entry")
    limit = layout.header.block_buckets(block) << M_LOG2
    tags = decode_sorted(data[:unary_end], data[unary_end:labels_start], count, limit)
    return tags, np.frombuffer(data[labels_start:], dtype=np.uint8)


def _layout_for(
    manifest: Manifest,
    header_bytes: bytes | memoryview,
    read_index: _Reader,
) -> BodyLayout:
    """Parse header and index, and insist they describe the manifest's body."""
    header = BodyHeader.unpack(header_bytes)
    if header.entry_count != manifest.entry_count or header.parameters != (
        manifest.filter_parameters
    ):
        raise FilterFormatError("body header disagrees with the manifest")
    layout = BodyLayout.unpack(header, read_index(header.index_size))
    if layout.body_size != manifest.body_size:
        raise FilterFormatError("body layout size disagrees with the manifest")
    return layout


def _categories(labels: NDArray[np.int16]) -> list[Category | None]:
    return [None if value < 0 else _CATEGORIES[value] for value in labels.tolist()]


class _ChunkStream:
    """Exact-size reads over an iterable of chunks, hashing every byte received."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._digest = BodyDigest()

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise BodyDigestError("body ended before the size its manifest states")
            self._digest.update(chunk)
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def verify(self, manifest: Manifest) -> None:
        """Take in whatever is left, then check size and digest."""
        for chunk in self._chunks:
            self._digest.update(chunk)
        self._digest.verify(manifest.body_size, manifest.body_sha256)
