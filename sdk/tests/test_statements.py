"""Operator-signed key statements: what verifies, and every way one can fail to."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import nacl.public
import nacl.signing
import pytest

from breachmatch import oprf
from breachmatch.filter.manifest import SIGNATURE_CONTEXT as MANIFEST_CONTEXT
from breachmatch.statements import (
    SIGNATURE_CONTEXT,
    KeyPurpose,
    KeyStatement,
    SignedKeyStatement,
    StatementError,
    sign_statement,
    verify_statement,
)

OPERATOR = nacl.signing.SigningKey.generate()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_, PK = oprf.random_key_pair()


def _statement(**changes: object) -> KeyStatement:
    fields: dict[str, object] = {
        "purpose": KeyPurpose.OPRF,
        "key_id": "k20260301-abcdef",
        "public_key": PK,
        "not_before": NOW - timedelta(days=1),
        "not_after": NOW + timedelta(days=30),
    }
    fields.update(changes)
    return KeyStatement(**fields)  # type: ignore[arg-type]


def test_a_signed_statement_verifies_and_round_trips_through_its_file_form():
    signed = sign_statement(_statement(), OPERATOR)
    again = SignedKeyStatement.from_json(signed.to_json())
    assert again == signed
    got = verify_statement(
        again, OPERATOR.verify_key, KeyPurpose.OPRF, key_id="k20260301-abcdef", now=NOW
    )
    assert got.public_key == PK
    assert got.to_bytes() == signed.statement_bytes


def test_another_signer_is_refused():
    signed = sign_statement(_statement(), nacl.signing.SigningKey.generate())
    with pytest.raises(StatementError, match="not signed by the operator"):
        verify_statement(signed, OPERATOR.verify_key, KeyPurpose.OPRF, now=NOW)


def test_changed_bytes_are_refused():
    signed = sign_statement(_statement(), OPERATOR)
    other_pk = oprf.random_key_pair()[1].hex()
    forged = SignedKeyStatement(
        signed.statement_bytes.replace(PK.hex().encode(), other_pk.encode()), signed.signature
    )
    with pytest.raises(StatementError, match="not signed"):
        verify_statement(forged, OPERATOR.verify_key, KeyPurpose.OPRF, now=NOW)


def test_a_manifest_signature_cannot_pass_for_a_statement():
    data = _statement().to_bytes()
    manifest_style = OPERATOR.sign(MANIFEST_CONTEXT + data).signature
    with pytest.raises(StatementError, match="not signed"):
        verify_statement(
            SignedKeyStatement(data, manifest_style), OPERATOR.verify_key, KeyPurpose.OPRF, now=NOW
        )


def test_the_purpose_must_be_the_one_asked_for():
    sealing = nacl.public.PrivateKey.generate().public_key
    signed = sign_statement(
        _statement(purpose=KeyPurpose.NOTIFIER_SEALING, public_key=bytes(sealing)), OPERATOR
    )
    with pytest.raises(StatementError, match="not oprf"):
        verify_statement(signed, OPERATOR.verify_key, KeyPurpose.OPRF, now=NOW)
    assert verify_statement(signed, OPERATOR.verify_key, KeyPurpose.NOTIFIER_SEALING, now=NOW)


def test_the_key_id_must_be_the_one_served():
    signed = sign_statement(_statement(), OPERATOR)
    with pytest.raises(StatementError, match="another key id"):
        verify_statement(signed, OPERATOR.verify_key, KeyPurpose.OPRF, key_id="k-other", now=NOW)


@pytest.mark.parametrize(
    "moment",
    [NOW - timedelta(days=2), NOW + timedelta(days=31)],
    ids=["not yet valid", "expired"],
)
def test_outside_its_window_a_statement_is_refused(moment):
    signed = sign_statement(_statement(), OPERATOR)
    with pytest.raises(StatementError, match="valid from"):
        verify_statement(signed, OPERATOR.verify_key, KeyPurpose.OPRF, now=moment)


def test_an_oprf_key_with_the_top_bit_set_cannot_be_stated():
    with pytest.raises(StatementError, match="top bit"):
        _statement(public_key=PK[:31] + bytes([PK[31] | 0x80]))
    with pytest.raises(StatementError, match="identity"):
        _statement(public_key=bytes(32))


def test_a_signed_but_non_canonical_statement_is_refused():
    document = json.loads(_statement().to_bytes())
    spaced = json.dumps(document, sort_keys=True).encode()  # spaces after separators
    signature = OPERATOR.sign(SIGNATURE_CONTEXT + spaced).signature
    signed = SignedKeyStatement(spaced, signature)
    with pytest.raises(StatementError, match="canonical"):
        verify_statement(signed, OPERATOR.verify_key, KeyPurpose.OPRF, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"statement_version": 2},
        {"purpose": "something-else"},
        {"extra": 1},
        {"not_after": "2026-01-01"},
        {"public_key": "zz" * 32},
    ],
)
def test_malformed_documents_are_refused(change):
    document = json.loads(_statement().to_bytes()) | change
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(StatementError):
        KeyStatement.from_bytes(data)


def test_a_window_must_not_be_empty():
    with pytest.raises(StatementError, match="later"):
        _statement(not_after=NOW - timedelta(days=1))
