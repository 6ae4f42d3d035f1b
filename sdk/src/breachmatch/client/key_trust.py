"""Which public keys this hospital relies on: only those the pinned operator key stated.

The matcher serves two kinds of public key besides the operator's own: the
VOPRF public key of each OPRF key id (every evaluation is proven against it)
and the notifier's sealing key (contact records are encrypted to it). Either,
taken from the matcher as served, would let a fake matcher pass its own key
off as the operator's. So each must come in a statement signed by the
operator key the SDK pinned (`pinning`), for the right purpose, under the id
it is served as, and within its validity window (`breachmatch.statements`);
otherwise the SDK refuses before it evaluates or seals anything, and records
the refusal (`audit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.public
import nacl.signing

from breachmatch.client.audit import SecurityAudit
from breachmatch.client.errors import UntrustedKeyError
from breachmatch.client.matcher import KeyInfo
from breachmatch.statements import KeyPurpose, StatementError, verify_statement


@dataclass(frozen=True, slots=True)
class TrustedOprfKey:
    """An OPRF key id and the public key the operator stated for it."""

    key_id: str
    public_key: bytes


def trusted_oprf_keys(
    info: KeyInfo, verify_key: nacl.signing.VerifyKey, audit: SecurityAudit, matcher: str
) -> dict[str, TrustedOprfKey]:
    """Every key id the matcher evaluates with its stated public key; refuses any unstated."""
    trusted: dict[str, TrustedOprfKey] = {}
    for key_id, signed in sorted(info.statements.items()):
        try:
            if signed is None:
                raise StatementError("no statement was served")
            statement = verify_statement(signed, verify_key, KeyPurpose.OPRF, key_id=key_id)
        except StatementError as exc:
            audit.record("untrusted_oprf_key", matcher=matcher, key_id=key_id, reason=str(exc))
            raise UntrustedKeyError(
                f"the matcher at {matcher} serves OPRF key {key_id} without a valid statement "
                f"from the pinned operator key ({exc}). Nothing was evaluated. Either the "
                "matcher is not the operator's, or the operator must sign its keys "
                "('breachmatch-matcher keys sign')."
            ) from None
        trusted[key_id] = TrustedOprfKey(key_id, statement.public_key)
    return trusted


def trusted_notifier_key(
    info: KeyInfo, verify_key: nacl.signing.VerifyKey, audit: SecurityAudit, matcher: str
) -> nacl.public.PublicKey:
    """The notifier's sealing key, if the pinned operator key stated it."""
    try:
        if info.notifier_statement is None:
            raise StatementError("no statement was served")
        statement = verify_statement(
            info.notifier_statement, verify_key, KeyPurpose.NOTIFIER_SEALING
        )
    except StatementError as exc:
        audit.record("untrusted_notifier_key", matcher=matcher, reason=str(exc))
        raise UntrustedKeyError(
            f"the matcher at {matcher} serves a notifier key without a valid statement from "
            f"the pinned operator key ({exc}). Nothing was sealed or sent. Either the matcher "
            "is not the operator's, or pass the notifier's key from the operator with "
            "--notifier-key FILE."
        ) from None
    return nacl.public.PublicKey(statement.public_key)
