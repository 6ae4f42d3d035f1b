"""The signed retraction: the operator withdraws one version of a breach.

A retraction makes every consumer stop serving, notifying about and keeping a
breach, and the hospital SDK deletes its stored copy — so it must be as
authentic as the publication it undoes. The operator signs a canonical JSON
statement (`breachmatch.filter.canonical`) naming the breach id, the version
it retracts, the reason and the time; the signature covers
``RETRACTION_CONTEXT + statement``, a context of its own, so a manifest
signature can never pass for a retraction or the other way round.

Naming the version is what makes a replay harmless: a retraction of version 1
cannot withdraw a version 2 published after it (`breachmatch.filter.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import nacl.exceptions
import nacl.signing

from breachmatch.filter.breach_ids import BREACH_ID_RULE, is_breach_id
from breachmatch.filter.canonical import canonical_bytes, parse_document
from breachmatch.filter.errors import RetractionFormatError, RetractionSignatureError
from breachmatch.filter.manifest import MAX_VERSION, SIGNATURE_SIZE
from breachmatch.v1.breach_pb2 import BreachRetraction

RETRACTION_FORMAT = 1
RETRACTION_CONTEXT = b"breachmatch.v1.breach-retraction\x00"
MAX_REASON = 500
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Retraction:
    breach_id: str
    #: The publication version withdrawn (and every older one).
    version: int
    reason: str
    #: UTC, whole seconds.
    retracted_at: datetime

    def __post_init__(self) -> None:
        if not is_breach_id(self.breach_id):
            raise RetractionFormatError(f"retraction breach_id must be {BREACH_ID_RULE}")
        if not 1 <= self.version <= MAX_VERSION:
            raise RetractionFormatError("retraction version must be a positive integer")
        check_reason(self.reason)
        if self.retracted_at.tzinfo is None or self.retracted_at.microsecond:
            raise RetractionFormatError("retraction time must be UTC in whole seconds")

    @classmethod
    def now(cls, breach_id: str, version: int, reason: str) -> Retraction:
        return cls(breach_id, version, reason, datetime.now(UTC).replace(microsecond=0))

    def to_bytes(self) -> bytes:
        document = {
            "retraction_format": RETRACTION_FORMAT,
            "breach_id": self.breach_id,
            "version": self.version,
            "reason": self.reason,
            "retracted_at": self.retracted_at.astimezone(UTC).strftime(_TIME_FORMAT),
        }
        return canonical_bytes(document, RetractionFormatError, "retraction")

    @classmethod
    def from_bytes(cls, data: bytes) -> Retraction:
        """Parse canonical statement bytes; anything else raises `RetractionFormatError`."""
        fields = parse_document(data, RetractionFormatError, "retraction")
        if fields.integer("retraction_format") != RETRACTION_FORMAT:
            raise RetractionFormatError("unsupported retraction_format")
        moment = fields.text("retracted_at")
        try:
            retracted_at = datetime.strptime(moment, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise RetractionFormatError("retraction field retracted_at is not UTC time") from None
        retraction = cls(
            breach_id=fields.text("breach_id"),
            version=fields.integer("version"),
            reason=fields.text("reason"),
            retracted_at=retracted_at,
        )
        fields.done()
        if retraction.to_bytes() != data:
            raise RetractionFormatError("retraction bytes are not in canonical form")
        return retraction


def check_reason(reason: str) -> None:
    """`RetractionFormatError` unless `reason` is one printable line of 1-`MAX_REASON` chars."""
    if not reason.strip() or len(reason) > MAX_REASON:
        raise RetractionFormatError(f"retraction reason must be 1-{MAX_REASON} characters")
    if not reason.isprintable():
        raise RetractionFormatError("retraction reason must be one printable line")


@dataclass(frozen=True, slots=True)
class SignedRetraction:
    retraction: Retraction
    statement: bytes
    signature: bytes

    def to_proto(self) -> BreachRetraction:
        return BreachRetraction(statement=self.statement, signature=self.signature)


def sign_retraction(
    retraction: Retraction, signing_key: nacl.signing.SigningKey
) -> SignedRetraction:
    statement = retraction.to_bytes()
    signature = signing_key.sign(RETRACTION_CONTEXT + statement).signature
    return SignedRetraction(retraction, statement, signature)


def verify_retraction(signed: BreachRetraction, verify_key: nacl.signing.VerifyKey) -> Retraction:
    """Check the signature over the exact statement bytes, then parse them."""
    if not signed.statement or len(signed.signature) != SIGNATURE_SIZE:
        raise RetractionSignatureError("the retraction carries no operator signature")
    try:
        verify_key.verify(RETRACTION_CONTEXT + signed.statement, signed.signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise RetractionSignatureError("retraction signature does not verify") from exc
    return Retraction.from_bytes(signed.statement)
