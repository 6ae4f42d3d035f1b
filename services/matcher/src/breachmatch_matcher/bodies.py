"""Filter bodies from the JetStream object store, served in ranges from a local copy.

A breach filter can be hundreds of megabytes and many hospitals download it at
once, resuming from an offset after a dropped connection, so each body is
fetched once into a private temporary directory and checked against the signed
manifest's size and SHA-256 while it is written (`breachmatch.objects`), then
served with seeks and bounded reads.

Bodies hold tags and encrypted labels only (never identifiers), but they are
still removed as soon as their breach is retracted or replaced, and the whole
directory goes when the matcher stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from nats.js.object_store import ObjectStore

from breachmatch import logs
from breachmatch.objects import LocalCopies
from breachmatch_matcher.breaches import ServedBreach

log = logs.get_logger(__name__)

CHUNK_SIZE = 1024 * 1024


class BodyUnavailableError(RuntimeError):
    """The body could not be fetched, or is not the one the manifest signs."""


class BodyCache:
    def __init__(self, store: ObjectStore, parent: Path | None = None) -> None:
        self._copies = LocalCopies(store, "breachmatch-bodies-", parent)
        #: The body object each breach's copy is of (its name changes with the body).
        self._objects: dict[str, str] = {}

    @property
    def directory(self) -> Path:
        return self._copies.directory

    async def local_copy(self, breach: ServedBreach) -> Path:
        """Path of a verified local copy of the breach's body, fetching it on first use."""
        breach_id = breach.artifact.breach_id
        manifest = breach.manifest
        # The object's name holds the body's digest: a new body is a new object.
        self._objects[breach_id] = manifest.body_object
        try:
            return await self._copies.path(
                manifest.body_object,
                f"{manifest.body_sha256}.body",
                lambda digest: digest.verify(manifest.body_size, manifest.body_sha256),
            )
        except (
            Exception
        ) as exc:  # missing object, NATS down, digest mismatch: all the same to a client
            log.error("breach body unavailable", breach_id=breach_id, error=type(exc).__name__)
            raise BodyUnavailableError("breach body is not available") from exc

    def forget(self, breach_id: str) -> None:
        """Drop the cached body of a retracted or replaced breach.

        Downloads already reading it keep their open file; new ones fetch again.
        """
        name = self._objects.pop(breach_id, None)
        if name is not None:
            self._copies.forget(name)

    def close(self) -> None:
        self._copies.close()


async def read_range(path: Path, offset: int) -> AsyncIterator[tuple[int, bytes]]:
    """(offset, chunk) pairs from `offset` to the end, one bounded read at a time."""
    handle = await asyncio.to_thread(path.open, "rb")
    with contextlib.closing(handle):
        handle.seek(offset)
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield offset, chunk
            offset += len(chunk)
