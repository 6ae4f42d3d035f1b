"""match_keys over whole records, domain separation, and what errors may reveal."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breachmatch.identifiers import (
    DOMAIN_PREFIX,
    IdentifierError,
    InvalidIdentifier,
    KeyKind,
    MatchKey,
    Placeholder,
    Strength,
    match_keys,
    normalise_birth_date,
    normalise_cpr,
    normalise_email,
    normalise_mrn,
    normalise_name_dob,
    normalise_phone,
    normalise_ssn,
)
from breachmatch.records import PersonRecord

# --- keys and domain separation ----------------------------------------------


def test_oprf_input_is_prefix_kind_and_value() -> None:
    key = MatchKey(KeyKind.CPR, "0101801234")
    assert key.oprf_input() == b"breachmatch:v1:cpr:0101801234"
    assert MatchKey(KeyKind.EMAIL, "søren@example.dk").oprf_input() == (
        DOMAIN_PREFIX + b"email:" + "søren@example.dk".encode()
    )


def test_kind_names_cannot_collide_with_the_separator() -> None:
    assert all(":" not in kind.value for kind in KeyKind)


# No deadline: first calls load library data lazily and CI boxes are busy.
@settings(deadline=None)
@given(
    st.sampled_from(KeyKind),
    st.text(max_size=12),
    st.sampled_from(KeyKind),
    st.text(max_size=12),
)
def test_distinct_keys_give_distinct_oprf_inputs(
    kind_a: KeyKind, value_a: str, kind_b: KeyKind, value_b: str
) -> None:
    a, b = MatchKey(kind_a, value_a), MatchKey(kind_b, value_b)
    assert (a.oprf_input() == b.oprf_input()) == (a == b)


def test_same_digits_under_two_kinds_are_different_inputs() -> None:
    assert MatchKey(KeyKind.CPR, "1234567890").oprf_input() != (
        MatchKey(KeyKind.PHONE, "1234567890").oprf_input()
    )


@pytest.mark.parametrize(
    ("kind", "strength"),
    [
        (KeyKind.CPR, Strength.STRONG),
        (KeyKind.SSN, Strength.STRONG),
        (KeyKind.MRN, Strength.STRONG),
        (KeyKind.EMAIL, Strength.MEDIUM),
        (KeyKind.PHONE, Strength.MEDIUM),
        (KeyKind.NAME_DOB, Strength.MEDIUM),
    ],
)
def test_strength_per_kind(kind: KeyKind, strength: Strength) -> None:
    assert MatchKey(kind, "v").strength is strength


def test_key_repr_shows_the_kind_but_not_the_value() -> None:
    text = repr(MatchKey(KeyKind.CPR, "0101801234"))
    assert "cpr" in text
    assert "0101801234" not in text


# --- match_keys --------------------------------------------------------------

SOEREN = PersonRecord(
    cpr="010180-1234",
    ssn="536-22-1234",
    mrn="MRN-001234",
    facility="Rigshospitalet",
    email="soeren.aagaard@example.dk",
    phone="+45 12 34 56 78",
    full_name="Søren Ærø Ågård",
    birth_date="1980-01-01",
)


def _inputs(record: PersonRecord) -> set[bytes]:
    return {key.oprf_input() for key in match_keys(record).keys}


def test_a_full_record_gives_one_key_per_kind_in_kind_order() -> None:
    extraction = match_keys(SOEREN)
    assert [key.kind for key in extraction.keys] == list(KeyKind)
    assert extraction.invalid == []
    assert extraction.placeholders == []


@pytest.mark.parametrize(
    "messy",
    [
        PersonRecord(
            cpr="0101801234",
            ssn="536 22 1234",
            mrn="mrn001234",
            facility="RIGSHOSPITALET",
            email="  SOEREN.AAGAARD@EXAMPLE.DK ",
            phone="12345678",
            given_name="Soeren",
            family_name="AERO aagaard",
            birth_date="01.01.1980",
        ),
        PersonRecord(
            cpr="01.01.80.1234",
            ssn="536221234",
            mrn="MRN 001234",
            facility=" rigshospitalet",
            email="Soeren.Aagaard@Example.DK",
            phone="004512345678",
            full_name="Ågård, Søren",
            birth_date="19800101",
        ),
        PersonRecord(
            cpr="010180 1234",
            ssn="536.22.1234",
            mrn="MRN.001234",
            facility="Rigshospitalet",
            email="soeren.aagaard@example.dk",
            phone="(+45) 12-34-56-78",
            full_name="SOEREN AAGAARD",
            birth_date="01/01/1980",
        ),
    ],
)
def test_messy_spellings_of_one_person_give_the_same_keys(messy: PersonRecord) -> None:
    assert _inputs(messy) == _inputs(SOEREN)
    assert len(_inputs(messy)) == len(KeyKind)


def test_different_people_share_no_key() -> None:
    other = PersonRecord(
        cpr="020280-4321",
        ssn="537-22-1234",
        mrn="MRN-001235",
        facility="Rigshospitalet",
        email="soeren.aagaard2@example.dk",
        phone="+45 12 34 56 79",
        full_name="Søren Ærø Ågård",
        birth_date="1980-01-02",
    )
    assert len(_inputs(other)) == len(KeyKind)
    assert _inputs(other).isdisjoint(_inputs(SOEREN))


def test_extra_emails_and_phones_add_deduplicated_keys() -> None:
    record = PersonRecord(
        email="soeren@example.dk",
        extra_emails=["SOEREN@example.dk", "s.aagaard@work.example.dk", "n/a"],
        phone="12345678",
        extra_phones=["+45 12 34 56 78", "004512345678", "87654321", "123"],
    )
    extraction = match_keys(record)
    assert [(key.kind, key.value) for key in extraction.keys] == [
        (KeyKind.EMAIL, "soeren@example.dk"),
        (KeyKind.EMAIL, "s.aagaard@work.example.dk"),
        (KeyKind.PHONE, "+4512345678"),
        (KeyKind.PHONE, "+4587654321"),
    ]
    assert extraction.placeholders == [KeyKind.EMAIL]
    assert extraction.invalid == [(KeyKind.PHONE, "phone_length")]


def test_placeholders_give_no_key_and_are_counted_apart_from_invalid_values() -> None:
    record = PersonRecord(
        cpr="0000000000",
        ssn="000-00-0000",
        mrn="0",
        facility="Rigshospitalet",
        email="x@x.x",
        phone="00000000",
        full_name="Test Testesen",
        birth_date="1980-01-01",
    )
    extraction = match_keys(record)
    assert extraction.keys == []
    assert extraction.invalid == []
    assert extraction.placeholders == list(KeyKind)


def test_empty_and_blank_fields_are_placeholders_but_none_is_absent() -> None:
    blank = match_keys(PersonRecord(cpr="", email="   ", phone=None, full_name=None))
    assert blank.keys == []
    assert blank.placeholders == [KeyKind.CPR, KeyKind.EMAIL]
    assert blank.invalid == []
    assert match_keys(PersonRecord()) == match_keys(PersonRecord(facility="Rigshospitalet"))
    assert match_keys(PersonRecord()).keys == []


def test_invalid_values_are_counted_by_reason_and_do_not_block_other_keys() -> None:
    record = PersonRecord(
        cpr="320180-1234",
        ssn="666-12-3456",
        mrn="1234",
        email="soeren@",
        phone="+45 12345678",
        full_name="Søren",
        birth_date="1980-01-01",
    )
    extraction = match_keys(record)
    assert [key.kind for key in extraction.keys] == [KeyKind.PHONE]
    assert extraction.invalid == [
        (KeyKind.CPR, "cpr_bad_date"),
        (KeyKind.SSN, "ssn_area"),
        (KeyKind.MRN, "mrn_no_facility"),
        (KeyKind.EMAIL, "email_syntax"),
        (KeyKind.NAME_DOB, "name_incomplete"),
    ]


def test_birth_date_is_never_taken_from_the_cpr() -> None:
    extraction = match_keys(PersonRecord(cpr="010180-1234", full_name="Søren Ågård"))
    assert [key.kind for key in extraction.keys] == [KeyKind.CPR]
    assert extraction.invalid == [(KeyKind.NAME_DOB, "dob_missing")]


# --- errors never reveal the value -------------------------------------------


def _name_dob_of_full_name(raw: str) -> str:
    return normalise_name_dob(
        given_name=None, family_name=None, full_name=raw, birth_date="1980-02-29"
    )


_NORMALISERS: list[Callable[[str], str]] = [
    normalise_cpr,
    normalise_ssn,
    normalise_email,
    normalise_phone,
    normalise_birth_date,
    partial(normalise_mrn, facility="Rigshospitalet"),
    partial(normalise_mrn, facility=None),
    _name_dob_of_full_name,
]

_identifier_like = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[0-9]{6}[- ]?[0-9A-Z]{4}", fullmatch=True),
    st.from_regex(r"[0-9]{3}-[0-9]{2}-[0-9]{4}", fullmatch=True),
    st.from_regex(r"\+?[0-9 ]{3,16}", fullmatch=True),
    st.from_regex(r"[a-zæøå.<>\" ]{1,10}@[a-zæøå.-]{0,12}", fullmatch=True),
    st.from_regex(r"[A-Za-zÆØÅæøå ,.-]{1,25}", fullmatch=True),
)


def _error_of(normalise: Callable[[str], str], raw: str) -> IdentifierError | None:
    try:
        normalise(raw)
    except IdentifierError as error:
        return error
    return None


@settings(deadline=None)
@given(st.sampled_from(_NORMALISERS), _identifier_like)
def test_errors_carry_kind_and_reason_only(normalise: Callable[[str], str], raw: str) -> None:
    error = _error_of(normalise, raw)
    if error is None:
        return
    if isinstance(error, InvalidIdentifier):
        expected = f"invalid {error.kind.value}: {error.reason.value}"
    else:
        assert isinstance(error, Placeholder)
        expected = f"placeholder {error.kind.value}"
    # The message is fully determined by kind and reason, so it cannot hold the value.
    assert error.args == (expected,)
    # Nothing chained from a validator whose own message may quote the input.
    assert error.__cause__ is None
    assert error.__context__ is None
