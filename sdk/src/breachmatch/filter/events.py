"""Reading a `BreachEvent` from the BREACHES stream, checked, in one place.

The matcher (which serves breaches) and the notifier (which alerts hospitals
and writes notices about them) both follow the same stream and must refuse
the same things: bytes that are not an event, an unknown kind, and a
published artifact whose manifest signature does not verify. One function
keeps their notion of a valid event from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.signing
from google.protobuf.message import DecodeError

from breachmatch.filter.errors import ArtifactError
from breachmatch.filter.manifest import Manifest, verify_artifact
from breachmatch.v1 import breach_pb2

PUBLISHED = breach_pb2.BreachEvent.KIND_PUBLISHED
RETRACTED = breach_pb2.BreachEvent.KIND_RETRACTED


class BreachEventError(ArtifactError):
    """An event that must be skipped; `reason` is a short metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"breach event rejected: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedBreachEvent:
    event: breach_pb2.BreachEvent
    #: The verified manifest of a published breach; None for a retraction.
    manifest: Manifest | None

    @property
    def breach_id(self) -> str:
        return self.event.artifact.breach_id


def read_breach_event(data: bytes, verify_key: nacl.signing.VerifyKey | None) -> CheckedBreachEvent:
    """Decode and check one event; raises `BreachEventError` with a reason label.

    Without a verify key the manifest is only parsed (the notifier's documented
    fallback); every service that serves breaches passes one.
    """
    try:
        event = breach_pb2.BreachEvent.FromString(data)
    except DecodeError:
        raise BreachEventError("undecodable") from None
    if event.kind == RETRACTED:
        return CheckedBreachEvent(event, None)
    if event.kind != PUBLISHED:
        raise BreachEventError("unknown_kind")
    try:
        manifest = (
            verify_artifact(event.artifact, verify_key)
            if verify_key is not None
            else Manifest.from_bytes(event.artifact.manifest)
        )
    except ArtifactError as exc:
        raise BreachEventError(type(exc).__name__) from None
    return CheckedBreachEvent(event, manifest)
