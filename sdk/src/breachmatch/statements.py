"""Operator-signed key statements: which public key a key id is, what for, and when.

A hospital pins one key, the operator's Ed25519 verify key. Every other public
key it relies on reaches it through the matcher — the OPRF public key each
VOPRF proof is checked against, and the notifier's sealing key its contact
records are encrypted to — and a key received from the party it is meant to
check proves nothing on its own: a fake matcher could serve its own OPRF key
(and prove its evaluations under it), or its own "notifier" key and read every
sealed record. So each such key travels in a statement signed by the operator
key, and the SDK verifies it against the pinned key before using the key.

A statement names a purpose (so an OPRF key can never be presented as a
sealing key or the other way round), a key id, the public key and a validity
window: `not_before`/`not_after` let a rotation overlap old and new keys, and
bound how long a leaked-then-retired key's statement can be replayed.

Format and signature follow the breach manifest (`breachmatch.filter.manifest`):
canonical JSON (sorted keys, no spaces, UTF-8), verified over the exact bytes
received and only then parsed, with its own signature context so that no
other message the operator key signs can pass for a statement.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import nacl.exceptions
import nacl.signing

from breachmatch import oprf

STATEMENT_VERSION = 1
SIGNATURE_CONTEXT = b"breachmatch.v1.key-statement\x00"
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
#: Clock skew tolerated between the operator and a hospital at either end of a window.
CLOCK_SKEW = timedelta(minutes=5)

_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_FIELDS = {"statement_version", "purpose", "key_id", "public_key", "not_before", "not_after"}


class KeyPurpose(StrEnum):
    #: An RFC 9497 VOPRF (mode 0x01, ristretto255-SHA512) public key pkS.
    OPRF = "oprf-voprf-ristretto255-sha512"
    #: The notifier's X25519 key that outreach requests are sealed to.
    NOTIFIER_SEALING = "notifier-sealing-x25519"


class StatementError(ValueError):
    """A key statement is malformed, unsigned, for another purpose or out of its window."""


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(text: Any, name: str) -> datetime:
    if not isinstance(text, str):
        raise StatementError(f"key statement field {name} must be a string")
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise StatementError(f"key statement field {name} is not YYYY-MM-DDTHH:MM:SSZ") from exc


@dataclass(frozen=True, slots=True)
class KeyStatement:
    purpose: KeyPurpose
    key_id: str
    public_key: bytes
    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise StatementError("key statement key_id must be 1-64 of [A-Za-z0-9._-]")
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise StatementError(f"key statement public_key must be {PUBLIC_KEY_SIZE} bytes")
        if self.purpose is KeyPurpose.OPRF:
            try:
                oprf.validate_element(self.public_key)
            except oprf.InvalidElementError as exc:
                raise StatementError(f"OPRF public key is invalid: {exc.reason}") from None
        elif self.public_key == bytes(PUBLIC_KEY_SIZE):
            raise StatementError("sealing public key is all zeros")
        if self.not_after <= self.not_before:
            raise StatementError("key statement not_after must be later than not_before")

    def valid_at(self, moment: datetime) -> bool:
        return self.not_before - CLOCK_SKEW <= moment < self.not_after + CLOCK_SKEW

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no insignificant spaces, UTF-8."""
        document = {
            "statement_version": STATEMENT_VERSION,
            "purpose": self.purpose.value,
            "key_id": self.key_id,
            "public_key": self.public_key.hex(),
            "not_before": format_time(self.not_before),
            "not_after": format_time(self.not_after),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyStatement:
        """Parse canonical statement bytes; anything else raises `StatementError`."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise StatementError("key statement is not UTF-8 JSON") from exc
        if not isinstance(document, dict) or set(document) != _FIELDS:
            raise StatementError(f"key statement must have exactly the fields {sorted(_FIELDS)}")
        if document["statement_version"] != STATEMENT_VERSION:
            raise StatementError("unsupported key statement version")
        try:
            purpose = KeyPurpose(document["purpose"])
        except ValueError:
            raise StatementError("key statement names an unknown purpose") from None
        key_id, public_key = document["key_id"], document["public_key"]
        if not isinstance(key_id, str) or not isinstance(public_key, str):
            raise StatementError("key statement key_id and public_key must be strings")
        try:
            raw_key = bytes.fromhex(public_key)
        except ValueError:
            raise StatementError("key statement public_key is not hex") from None
        statement = cls(
            purpose=purpose,
            key_id=key_id,
            public_key=raw_key,
            not_before=_parse_time(document["not_before"], "not_before"),
            not_after=_parse_time(document["not_after"], "not_after"),
        )
        if statement.to_bytes() != data:
            raise StatementError("key statement bytes are not in canonical form")
        return statement


@dataclass(frozen=True, slots=True)
class SignedKeyStatement:
    """A statement's exact bytes and the operator's signature over them."""

    statement_bytes: bytes
    signature: bytes

    def to_json(self) -> str:
        """The file form (operator tooling writes it; the matcher serves it)."""
        return json.dumps(
            {"statement": self.statement_bytes.decode("utf-8"), "signature": self.signature.hex()},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> SignedKeyStatement:
        try:
            document = json.loads(text)
            return cls(
                statement_bytes=document["statement"].encode("utf-8"),
                signature=bytes.fromhex(document["signature"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StatementError("not a signed key statement file") from exc

    def unverified(self) -> KeyStatement:
        """The statement as written, signature unchecked: for the operator's own listings."""
        return KeyStatement.from_bytes(self.statement_bytes)


def sign_statement(
    statement: KeyStatement, signing_key: nacl.signing.SigningKey
) -> SignedKeyStatement:
    data = statement.to_bytes()
    return SignedKeyStatement(data, signing_key.sign(SIGNATURE_CONTEXT + data).signature)


def verify_statement(
    signed: SignedKeyStatement,
    verify_key: nacl.signing.VerifyKey,
    purpose: KeyPurpose,
    *,
    key_id: str | None = None,
    now: datetime | None = None,
) -> KeyStatement:
    """The statement, if the operator signed exactly these bytes for `purpose` and it is valid now.

    `key_id`, when given, must be the one the statement names (the id the
    matcher advertised it under).
    """
    if len(signed.signature) != SIGNATURE_SIZE:
        raise StatementError(f"key statement signature must be {SIGNATURE_SIZE} bytes")
    try:
        verify_key.verify(SIGNATURE_CONTEXT + signed.statement_bytes, signed.signature)
    except nacl.exceptions.BadSignatureError:
        raise StatementError("key statement is not signed by the operator key") from None
    statement = KeyStatement.from_bytes(signed.statement_bytes)
    if statement.purpose is not purpose:
        raise StatementError(f"key statement is for {statement.purpose}, not {purpose}")
    if key_id is not None and statement.key_id != key_id:
        raise StatementError("key statement names another key id than it was served under")
    moment = now or datetime.now(UTC)
    if not statement.valid_at(moment):
        raise StatementError(
            f"key statement for {statement.key_id} is valid from "
            f"{format_time(statement.not_before)} to {format_time(statement.not_after)}, not now"
        )
    return statement
