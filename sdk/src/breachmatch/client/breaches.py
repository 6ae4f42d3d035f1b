"""Breach filters on the hospital's disk: downloaded once, resumed, always verified.

Layout, one directory per breach under ``<state>/breaches/<breach_id>/``:

* ``artifact.bin`` — the `BreachArtifact` (manifest bytes + signature) as served;
* ``body.part`` — a download in progress, resumed from its size;
* ``body`` — the complete body, renamed into place only after its size and
  SHA-256 matched the signed manifest.

Nothing is trusted because it is on disk: every use re-verifies the stored
manifest signature against the pinned operator key and the body against the
manifest (`BreachFilter.open` hashes it). A stored copy that fails is refused
with the path to delete, not silently replaced: the state directory is the
hospital's, and a change to it is worth a human's look. The bodies hold tags
and encrypted labels only, nothing about anyone outside the breach.

A breach id from the matcher names a folder here, so every such path is built
by `breachmatch.filter.path_in`: an id that is not a plain breach id (``..``,
a slash) or a path that resolves outside ``breaches/`` is refused before
anything is created or deleted.
"""

from __future__ import annotations

import hmac
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nacl.signing

from breachmatch.client.connection import is_retryable
from breachmatch.client.errors import ArtifactRefusedError, RpcFailedError
from breachmatch.client.matcher import MatcherClient
from breachmatch.filter import (
    ArtifactError,
    BreachFilter,
    BreachIdError,
    Manifest,
    path_in,
    verify_artifact,
    verify_body,
)
from breachmatch.v1 import breach_pb2

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredBreach:
    manifest: Manifest
    body: Path

    def open(self) -> BreachFilter:
        """Memory-map and verify the body (size, SHA-256, header) against the manifest."""
        try:
            return BreachFilter.open(self.body, self.manifest)
        except ArtifactError as exc:
            raise _altered(self.manifest.breach_id, self.body, exc) from None


def _altered(breach_id: str, path: Path, exc: Exception) -> ArtifactRefusedError:
    return ArtifactRefusedError(
        f"the stored copy of breach {breach_id} ({path}) fails verification ({exc}): it was "
        f"changed after it was downloaded and verified. Refusing it; delete {path.parent} "
        "to download the breach again"
    )


def breach_folder(directory: Path, breach_id: str) -> Path:
    """``directory/<breach_id>``, refused (`ArtifactRefusedError`) unless it stays inside."""
    try:
        return path_in(directory, breach_id)
    except BreachIdError as exc:
        raise ArtifactRefusedError(f"{exc}; nothing was stored or deleted") from None


def forget_breach(directory: Path, breach_id: str) -> None:
    """Delete the stored copy of a retracted breach, if there is one."""
    folder = breach_folder(directory, breach_id)
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)


def verify_served(artifact: breach_pb2.BreachArtifact, key: nacl.signing.VerifyKey) -> Manifest:
    """The manifest of an artifact the matcher served, if its signature holds."""
    try:
        return verify_artifact(artifact, key)
    except ArtifactError as exc:
        raise ArtifactRefusedError(
            f"breach {artifact.breach_id[:128]!r} as served by the matcher is refused: {exc}. "
            "It is not signed by the pinned operator key, or was altered; tell the operator"
        ) from None


class BreachStore:
    def __init__(
        self, directory: Path, matcher: MatcherClient, verify_key: nacl.signing.VerifyKey
    ) -> None:
        self._directory = directory
        self._matcher = matcher
        self._key = verify_key

    def fetch(self, artifact: breach_pb2.BreachArtifact) -> StoredBreach:
        """The verified local copy of a served breach, downloading what is missing."""
        manifest = verify_served(artifact, self._key)
        folder = breach_folder(self._directory, manifest.breach_id)
        body = folder / "body"
        saved = self._saved_artifact(folder / "artifact.bin")
        if saved is not None and not _same(saved, artifact):
            shutil.rmtree(folder)  # republished: the old copy is of another manifest
        folder.mkdir(parents=True, exist_ok=True)
        if saved is None:
            (folder / "body.part").unlink(missing_ok=True)  # of no known manifest
        if not body.exists():
            (folder / "artifact.bin").write_bytes(artifact.SerializeToString())
            self._download(artifact, manifest, folder / "body.part")
            (folder / "body.part").replace(body)
        return StoredBreach(manifest, body)

    def _saved_artifact(self, path: Path) -> breach_pb2.BreachArtifact | None:
        if not path.exists():
            return None
        saved = breach_pb2.BreachArtifact()
        try:
            saved.ParseFromString(path.read_bytes())
            verify_artifact(saved, self._key)
        except Exception as exc:  # protobuf's DecodeError or any ArtifactError
            raise _altered(path.parent.name, path, exc) from None
        return saved

    def _download(
        self, artifact: breach_pb2.BreachArtifact, manifest: Manifest, part: Path
    ) -> None:
        """Fetch the body into `part`, resuming from its size; retry transient failures."""
        backoff = self._matcher.backoff
        retry = 0
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                self._receive(artifact, manifest, part, before)
                break
            except grpc.RpcError as error:
                if part.exists() and part.stat().st_size > before:
                    retry = 0
                if not is_retryable(error) or retry + 1 >= backoff.attempts:
                    raise self._matcher.explain(error) from None
                time.sleep(backoff.delay(retry))
                retry += 1
        try:
            verify_body(manifest, _file_chunks(part))
        except ArtifactError as exc:
            part.unlink()
            raise ArtifactRefusedError(
                f"breach {manifest.breach_id} as downloaded from the matcher does not match "
                f"its signed manifest ({exc}); refusing it. Tell the operator"
            ) from None

    def _receive(
        self, artifact: breach_pb2.BreachArtifact, manifest: Manifest, part: Path, offset: int
    ) -> None:
        if offset > manifest.body_size:
            part.unlink()
            offset = 0
        responses = self._matcher.get_breach(manifest.breach_id, offset)
        first = next(iter(responses), None)
        if first is None or first.WhichOneof("part") != "artifact":
            raise RpcFailedError("the matcher's GetBreach stream did not start with the artifact")
        if not _same(first.artifact, artifact):
            raise RpcFailedError(
                f"breach {manifest.breach_id} changed while it was being downloaded; "
                "run the check again"
            )
        with part.open("ab") as out:
            for response in responses:
                if response.WhichOneof("part") != "chunk" or response.offset != offset:
                    raise RpcFailedError("the matcher sent breach body chunks out of order")
                out.write(response.chunk)
                out.flush()
                offset += len(response.chunk)
                if offset > manifest.body_size:
                    raise ArtifactRefusedError(
                        f"breach {manifest.breach_id} from the matcher is longer than its "
                        "signed manifest states; refusing it"
                    )


def _same(a: breach_pb2.BreachArtifact, b: breach_pb2.BreachArtifact) -> bool:
    return hmac.compare_digest(a.manifest, b.manifest) and hmac.compare_digest(
        a.signature, b.signature
    )


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_READ_CHUNK):
            yield chunk
