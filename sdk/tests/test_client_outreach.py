"""Notices: sealed to the notifier's key with a proof, CPR only for Digital Post, opaque refs."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.exceptions
import nacl.public
import pytest

from breachmatch.client.cache_key import CacheKey
from breachmatch.client.outreach import idempotency_key, opaque_ref, plan_outreach
from breachmatch.client.patients import read_patients
from breachmatch.client.results import CheckResult, Match
from breachmatch.identifiers import Strength
from breachmatch.v1 import outreach_pb2

EXPORT = """patient_id,cpr,first_name,last_name,birth_date,email,phone,address,language
P1,0102031234,Anna,Berg,1903-02-01,anna@example.dk,+45 21 43 65 87,"Vej 1, 8000 Aarhus C",en
P2,,Bo,Dahl,1950-01-01,bo@example.dk,,,da
"""


def _result(*matches: Match) -> CheckResult:
    return CheckResult(
        tenant="hospital-a",
        patients_file="x",
        generated_at="2026-11-23T09:00:00Z",
        patients_checked=2,
        bad_rows=0,
        patients_without_keys=0,
        match_keys=5,
        evaluations=0,
        matches=matches,
    )


STRONG = Match("P1", "leak-1", ("cpr",), "strong", ("national_id", "medical_history"))
MEDIUM = Match("P2", "leak-1", ("email",), "medium", ("contact",))
GONE = Match("P9", "leak-1", ("cpr",), "strong", ("contact",))
CHANGED = Match("P2", "leak-1", ("cpr",), "strong", ("contact",))
PROOFS = {
    ("P1", "leak-1"): outreach_pb2.MatchProof(key_kind="cpr", token=b"\x01" * 64),
    ("P2", "leak-1"): outreach_pb2.MatchProof(key_kind="email", token=b"\x02" * 64),
    ("P9", "leak-1"): outreach_pb2.MatchProof(key_kind="cpr", token=b"\x09" * 64),
}


@pytest.fixture
def notifier() -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey.generate()


@pytest.fixture
def cache_key() -> CacheKey:
    return CacheKey(os.urandom(32))


def _open(item: outreach_pb2.OutreachItem, key: nacl.public.PrivateKey):
    details = outreach_pb2.ContactDetails()
    details.ParseFromString(nacl.public.SealedBox(key).decrypt(item.sealed_contact))
    return details


def test_items_are_sealed_contact_details_only_the_notifier_opens(
    tmp_path: Path, notifier, cache_key
):
    export = tmp_path / "p.csv"
    export.write_text(EXPORT)
    plan = plan_outreach(
        _result(STRONG),
        read_patients(export),
        PROOFS,
        tenant="hospital-a",
        cache_key=cache_key,
        notifier_key=notifier.public_key,
        channels=["digital_post", "email"],
        min_strength=Strength.STRONG,
    )
    (item,) = plan.items
    assert plan.patient_ids == ("P1",)
    assert item.patient_ref == opaque_ref(cache_key, "hospital-a", "P1")
    assert b"anna@example.dk" not in item.sealed_contact
    details = _open(item, notifier)
    assert details.name == "Anna Berg"
    assert details.email == "anna@example.dk"
    assert details.cpr == "0102031234"
    assert details.postal_address == "Vej 1, 8000 Aarhus C"
    assert details.language == "en"
    assert list(details.channels) == ["digital_post", "email"]
    # The proof goes in: the notifier reads the categories from the entry it proves.
    assert details.proof == PROOFS["P1", "leak-1"]
    with pytest.raises(nacl.exceptions.CryptoError):
        nacl.public.SealedBox(nacl.public.PrivateKey.generate()).decrypt(item.sealed_contact)


def test_cpr_is_left_out_unless_digital_post_is_a_channel(tmp_path: Path, notifier, cache_key):
    export = tmp_path / "p.csv"
    export.write_text(EXPORT)
    plan = plan_outreach(
        _result(STRONG),
        read_patients(export),
        PROOFS,
        tenant="hospital-a",
        cache_key=cache_key,
        notifier_key=notifier.public_key,
        channels=["email", "sms"],
        min_strength=Strength.STRONG,
    )
    assert _open(plan.items[0], notifier).cpr == ""


def test_policy_and_missing_patients_are_counted_not_sent(tmp_path: Path, notifier, cache_key):
    export = tmp_path / "p.csv"
    export.write_text(EXPORT)
    patients = read_patients(export)
    strict = plan_outreach(
        _result(STRONG, MEDIUM, GONE),
        patients,
        PROOFS,
        tenant="hospital-a",
        cache_key=cache_key,
        notifier_key=notifier.public_key,
        channels=["email"],
        min_strength=Strength.STRONG,
    )
    assert strict.patient_ids == ("P1",)
    assert (strict.below_strength, strict.missing_patients) == (1, 1)
    lenient = plan_outreach(
        _result(STRONG, MEDIUM),
        patients,
        PROOFS,
        tenant="hospital-a",
        cache_key=cache_key,
        notifier_key=notifier.public_key,
        channels=["email"],
        min_strength=Strength.MEDIUM,
    )
    assert lenient.patient_ids == ("P1", "P2")


def test_a_match_without_a_proof_is_counted_not_sent(tmp_path: Path, notifier, cache_key):
    export = tmp_path / "p.csv"
    export.write_text(EXPORT)
    plan = plan_outreach(
        _result(STRONG, CHANGED),
        read_patients(export),
        {("P1", "leak-1"): PROOFS["P1", "leak-1"]},
        tenant="hospital-a",
        cache_key=cache_key,
        notifier_key=notifier.public_key,
        channels=["email"],
        min_strength=Strength.STRONG,
    )
    assert plan.patient_ids == ("P1",)
    assert plan.unproven == 1


def test_opaque_refs_are_stable_keyed_and_distinct(cache_key):
    ref = opaque_ref(cache_key, "hospital-a", "0102031234")
    assert ref == opaque_ref(cache_key, "hospital-a", "0102031234")
    assert len(ref) == 64
    assert set(ref) <= set("0123456789abcdef")
    assert "0102031234" not in ref
    assert ref != idempotency_key(cache_key, "hospital-a", "0102031234", "leak-1")
    others = {
        opaque_ref(cache_key, "hospital-b", "0102031234"),
        opaque_ref(cache_key, "hospital-a", "0102031235"),
        opaque_ref(CacheKey(os.urandom(32)), "hospital-a", "0102031234"),
    }
    assert ref not in others
    assert len(others) == 3


def test_idempotency_keys_are_stable_keyed_and_distinct(cache_key):
    key = idempotency_key(cache_key, "hospital-a", "P1", "leak-1")
    assert key == idempotency_key(cache_key, "hospital-a", "P1", "leak-1")
    assert len(key) == 64
    assert "P1" not in key
    others = {
        idempotency_key(cache_key, "hospital-b", "P1", "leak-1"),
        idempotency_key(cache_key, "hospital-a", "P2", "leak-1"),
        idempotency_key(cache_key, "hospital-a", "P1", "leak-2"),
        idempotency_key(CacheKey(os.urandom(32)), "hospital-a", "P1", "leak-1"),
    }
    assert key not in others
    assert len(others) == 4
