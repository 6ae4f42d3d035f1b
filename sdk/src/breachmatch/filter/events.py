"""Reading a `BreachEvent` from the BREACHES stream, checked, in one place.

The matcher (which serves breaches), the notifier (which alerts hospitals
and writes notices about them) and the hospital SDK (which follows the
matcher's WatchBreaches) must refuse the same things: bytes that are not an
event, an unknown kind, a publication whose manifest signature does not
verify, and a retraction that is unsigned, badly signed or names another
breach than its envelope. One function keeps their notion of a valid event
from drifting apart; `breachmatch.filter.lifecycle` then decides whether a
valid event is newer than what the consumer already knows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.signing
from google.protobuf.message import DecodeError

from breachmatch.filter.errors import ArtifactError
from breachmatch.filter.manifest import Manifest, verify_artifact
from breachmatch.filter.retraction import Retraction, verify_retraction
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
    #: The verified statement of a retraction; None for a publication.
    retraction: Retraction | None

    @property
    def breach_id(self) -> str:
        return self.event.artifact.breach_id

    @property
    def version(self) -> int:
        """The version published, or the version retracted."""
        if self.manifest is not None:
            return self.manifest.version
        assert self.retraction is not None
        return self.retraction.version

    @property
    def manifest_sha256(self) -> str:
        """SHA-256 of the signed manifest bytes ("" for a retraction): a publication's identity."""
        if self.manifest is None:
            return ""
        return hashlib.sha256(self.event.artifact.manifest).hexdigest()


def read_breach_event(data: bytes, verify_key: nacl.signing.VerifyKey) -> CheckedBreachEvent:
    """Decode and check one event; raises `BreachEventError` with a reason label."""
    try:
        event = breach_pb2.BreachEvent.FromString(data)
    except DecodeError:
        raise BreachEventError("undecodable") from None
    return check_breach_event(event, verify_key)


def check_breach_event(
    event: breach_pb2.BreachEvent, verify_key: nacl.signing.VerifyKey
) -> CheckedBreachEvent:
    """`read_breach_event` for an event already decoded (as WatchBreaches delivers it)."""
    if event.kind not in (PUBLISHED, RETRACTED):
        raise BreachEventError("unknown_kind")
    try:
        if event.kind == PUBLISHED:
            return CheckedBreachEvent(event, verify_artifact(event.artifact, verify_key), None)
        retraction = verify_retraction(event.retraction, verify_key)
    except ArtifactError as exc:
        raise BreachEventError(type(exc).__name__) from None
    if event.artifact.breach_id != retraction.breach_id or event.reason != retraction.reason:
        raise BreachEventError("retraction_envelope_mismatch")
    return CheckedBreachEvent(event, None, retraction)
