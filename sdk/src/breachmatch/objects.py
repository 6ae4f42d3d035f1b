"""Breach artifacts from the JetStream object store, as checked local files.

A filter body can be hundreds of megabytes. The matcher serves ranges of it to
many hospitals and the notifier checks proofs of match against it; neither can
afford to hold a body in memory per request or replay the object's chunks to
reach an offset. So each object is fetched once into a private temporary
directory, checked while it is written (size, SHA-256 against the signed
manifest), renamed into place, and then read with seeks or memory-mapped.

A new version of an object (a republished breach) gets a new file name, and
`forget` drops a withdrawn one; readers that already opened the old file keep
it until they close it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from nats.js.object_store import ObjectStore

from breachmatch.filter.digest import BodyDigest

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Checks the digest of a fetched object; raises to refuse it.
Check = Callable[[BodyDigest], None]


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


class LocalCopies:
    """Checked local copies of objects, one file per version of each."""

    def __init__(self, store: ObjectStore, prefix: str, parent: Path | None = None) -> None:
        self._store = store
        self.directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._paths: dict[str, Path] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, name: str, file_name: str, check: Check) -> Path:
        """The local copy of object ``name``, fetched and checked on first use.

        ``file_name`` must differ for every version of the object (e.g. carry
        the digest its manifest signs), so a stale copy is never taken for a
        new one. Raises whatever fetching raises (a missing object, NATS down)
        or ``check`` raises (a digest that differs); nothing is kept then.
        """
        # Two objects may share a version (two breaches with one body): the name tells them apart.
        path = self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}-{file_name}"
        async with self._locks.setdefault(name, asyncio.Lock()):
            if self._paths.get(name) == path:
                return path
            partial = path.with_name(path.name + ".partial")
            try:
                with partial.open("wb") as handle:
                    writer = _DigestingWriter(handle)
                    await self._store.get(name, writeinto=writer)
                check(writer.digest)
                partial.replace(path)
            finally:
                partial.unlink(missing_ok=True)
            self._paths[name] = path
            return path

    def forget(self, name: str) -> None:
        """Drop the local copy of ``name``; the next `path` fetches it again."""
        path = self._paths.pop(name, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
