"""Filter bodies from the JetStream object store, served in ranges from a local copy.

A breach filter can be hundreds of megabytes and many hospitals download it at
once, resuming from an offset after a dropped connection. Reading the object
store per request would hold a whole body in memory per download (or replay
its chunks from the start to reach an offset), so each body is fetched once
into a private temporary directory, checked against the signed manifest's size
and SHA-256 while it is written, and then served with seeks and bounded reads.

Bodies hold tags and encrypted labels only (never identifiers), but they are
still removed as soon as their breach is retracted or replaced, and the whole
directory goes when the matcher stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from nats.js.object_store import ObjectStore

from breachmatch import logs
from breachmatch.filter.digest import BodyDigest
from breachmatch_matcher.breaches import ServedBreach

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logs.get_logger(__name__)

CHUNK_SIZE = 1024 * 1024


class BodyUnavailableError(RuntimeError):
    """The body could not be fetched, or is not the one the manifest signs."""


class _DigestingWriter(io.BufferedIOBase):
    """A write-only file for `ObjectStore.get(writeinto=...)` that digests what it writes."""

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__()
        self._handle = handle
        self.digest = BodyDigest()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data)
        self.digest.update(view)
        return self._handle.write(view)


class BodyCache:
    def __init__(self, store: ObjectStore, parent: Path | None = None) -> None:
        self._store = store
        self.directory = Path(tempfile.mkdtemp(prefix="breachmatch-bodies-", dir=parent))
        self._paths: dict[str, Path] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _path_for(self, breach: ServedBreach) -> Path:
        # A new publication under the same breach id gets a new file name.
        version = hashlib.sha256(breach.artifact.signature).hexdigest()[:32]
        return self.directory / f"{version}.body"

    async def local_copy(self, breach: ServedBreach) -> Path:
        """Path of a verified local copy of the breach's body, fetching it on first use."""
        path = self._path_for(breach)
        breach_id = breach.artifact.breach_id
        lock = self._locks.setdefault(breach_id, asyncio.Lock())
        async with lock:
            if self._paths.get(breach_id) == path:
                return path
            partial = path.with_suffix(".partial")
            try:
                with partial.open("wb") as handle:
                    writer = _DigestingWriter(handle)
                    await self._store.get(breach.manifest.body_object, writeinto=writer)
                writer.digest.verify(breach.manifest.body_size, breach.manifest.body_sha256)
                partial.replace(path)
            except (
                Exception
            ) as exc:  # missing object, NATS down, digest mismatch: all the same to a client
                log.error("breach body unavailable", breach_id=breach_id, error=type(exc).__name__)
                raise BodyUnavailableError("breach body is not available") from exc
            finally:
                partial.unlink(missing_ok=True)
            self._paths[breach_id] = path
            log.info("breach body cached", breach_id=breach_id, size=breach.manifest.body_size)
            return path

    def forget(self, breach_id: str) -> None:
        """Drop the cached body of a retracted or replaced breach.

        Downloads already reading it keep their open file; new ones fetch again.
        """
        path = self._paths.pop(breach_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


async def read_range(path: Path, offset: int) -> AsyncIterator[tuple[int, bytes]]:
    """(offset, chunk) pairs from `offset` to the end, one bounded read at a time."""
    handle = await asyncio.to_thread(path.open, "rb")
    with contextlib.closing(handle):
        handle.seek(offset)
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield offset, chunk
            offset += len(chunk)
