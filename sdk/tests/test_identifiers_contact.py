"""E-mail and phone normalisation, including the fast paths held equal to the libraries."""

from __future__ import annotations

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from breachmatch.identifiers import (
    InvalidIdentifier,
    KeyKind,
    Placeholder,
    Reason,
    normalise_email,
    normalise_phone,
)

# --- e-mail ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("soeren.hansen@example.dk", "soeren.hansen@example.dk"),
        ("  Soeren.Hansen@EXAMPLE.DK \t", "soeren.hansen@example.dk"),
        ("SOEREN.HANSEN@Example.Dk", "soeren.hansen@example.dk"),
        ("Søren@Bücher.DK", "søren@xn--bcher-kva.dk"),
        ("søren@xn--bcher-kva.dk", "søren@xn--bcher-kva.dk"),
        ("first+tag@sub.example.co.uk", "first+tag@sub.example.co.uk"),
    ],
)
def test_email_is_trimmed_case_folded_and_idna_encoded(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "soeren.hansen",
        "soeren@",
        "@example.dk",
        "soeren@@example.dk",
        "soeren..hansen@example.dk",
        "soeren@example",  # no dot in the domain
        "soeren@localhost",
        "soeren@example.test",  # special-use domain
        "Søren <soeren@example.dk>",
        '"soeren hansen"@example.dk',
        "soeren@-example.dk",
    ],
)
def test_email_syntax_errors_are_invalid(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_email(raw)
    assert caught.value.kind is KeyKind.EMAIL
    assert caught.value.reason is Reason.EMAIL_SYNTAX


@pytest.mark.parametrize(
    "raw",
    [
        "x@x.x",
        "X@X.X",
        "a@aa.aa",
        "test@test.com",
        "unknown@example.dk",
        "noemail@gmail.com",
        "no-reply@example.dk",
        "ingen@ingen.dk",
        "ukendt",
        "none",
        "",
        " ",
    ],
)
def test_email_fillers_are_placeholders(raw: str) -> None:
    with pytest.raises(Placeholder) as caught:
        normalise_email(raw)
    assert caught.value.kind is KeyKind.EMAIL


def _by_validator(address: str) -> str | None:
    """The key value by email-validator alone: what the fast path must reproduce."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part.casefold()}@{checked.ascii_domain}"


def _normalised_or_none(address: str) -> str | None:
    try:
        return normalise_email(address)
    except InvalidIdentifier:
        return None


_ascii_tricky = st.text(alphabet="aZ09._+-!#@", min_size=1, max_size=30)
_labels = st.from_regex(r"[a-zA-Z0-9-]{1,8}", fullmatch=True)
_ascii_plausible = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[a-zA-Z0-9_+.-]{1,12}", fullmatch=True),
    st.lists(_labels, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["dk", "COM", "test", "local", "x1", "org", "xn--p1ai", "d"]),
)


# No deadline: first calls load library data lazily and CI boxes are busy.
@settings(deadline=None)
@given(st.one_of(_ascii_tricky, _ascii_plausible))
@example("a" * 64 + "@example.dk")
@example("a" * 65 + "@example.dk")
@example("a@" + "b" * 63 + ".dk")
@example("a@" + "b" * 64 + ".dk")
@example("a@ab--cd.dk")
@example("a@" + ("b" * 63 + ".") * 3 + "b" * 57 + ".dk")  # 254 characters
@example("a@" + ("b" * 63 + ".") * 3 + "b" * 58 + ".dk")  # 255 characters
@example("a@xn--bcher-kva.dk")
@example("a@example.dk.")
def test_email_fast_path_agrees_with_email_validator(address: str) -> None:
    try:
        actual = _normalised_or_none(address)
    except Placeholder:
        assume(False)
    assert actual == _by_validator(address)


@settings(deadline=None)
@given(st.emails(), st.booleans())
def test_email_normalisation_is_idempotent_and_case_free(address: str, upper: bool) -> None:
    try:
        once = normalise_email(address)
    except Placeholder:
        assume(False)
    assert normalise_email(once) == once
    respelled = f"  {address.upper() if upper else address.title()}  "
    assert normalise_email(respelled) == once


# --- phone -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "+45 12 34 56 78",
        "12345678",
        "004512345678",
        "0045 12 34 56 78",
        "+4512345678",
        "(+45) 12 34 56 78",
        "+45-12-34-56-78",
        "12 34 56 78",
        "1234 5678",
        "+45 12345678 ext. 12",
        "12345678 x 3",
        "１２ ３４ ５６ ７８",  # full-width digits
    ],
)
def test_danish_phone_spellings_give_one_e164(raw: str) -> None:
    assert normalise_phone(raw) == "+4512345678"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+46 8 123 456 78", "+46812345678"),
        ("+1 (212) 555-0100", "+12125550100"),
        ("0046 8 123 456 78", "+46812345678"),
        ("4512345678", "+4512345678"),  # country code without a prefix
    ],
)
def test_foreign_phones_are_parsed_by_phonenumbers(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("123", Reason.PHONE_LENGTH),
        ("+45 1234 5678 9", Reason.PHONE_LENGTH),
        ("1-800-FLOWERS", Reason.PHONE_SYNTAX),
        ("tlf 12345678", Reason.PHONE_SYNTAX),
        ("12345678+", Reason.PHONE_SYNTAX),
        ("+999 12345678", Reason.PHONE_SYNTAX),
    ],
)
def test_impossible_phones_are_invalid(raw: str, reason: Reason) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_phone(raw)
    assert caught.value.kind is KeyKind.PHONE
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    "raw",
    [
        "00000000",
        "+45 00 00 00 00",
        "11111111",
        "+45 99 99 99 99",
        "12 34 XX XX",
        "****",
        "n/a",
        "",
    ],
)
def test_phone_fillers_are_placeholders(raw: str) -> None:
    with pytest.raises(Placeholder) as caught:
        normalise_phone(raw)
    assert caught.value.kind is KeyKind.PHONE


_danish_numbers = st.from_regex(r"[1-9][0-9]{7}", fullmatch=True).filter(
    lambda digits: len(set(digits)) > 1
)


@settings(deadline=None)
@given(_danish_numbers)
def test_danish_fast_path_agrees_with_phonenumbers(digits: str) -> None:
    parsed = phonenumbers.parse(digits, "DK")
    assert phonenumbers.is_possible_number(parsed)
    expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    for spelling in (digits, f"+45{digits}", f"0045{digits}"):
        assert normalise_phone(spelling) == expected


@settings(deadline=None)
@given(_danish_numbers, st.sampled_from(["+45 ", "0045 ", "", "(+45) "]), st.sampled_from(" -."))
def test_phone_normalisation_is_idempotent_and_spelling_free(
    digits: str, prefix: str, separator: str
) -> None:
    once = normalise_phone(digits)
    assert normalise_phone(once) == once
    pairs = separator.join(digits[i : i + 2] for i in range(0, 8, 2))
    assert normalise_phone(prefix + pairs) == once


@settings(deadline=None)
@given(_danish_numbers, _danish_numbers)
def test_different_phones_give_different_values(first: str, second: str) -> None:
    assert (normalise_phone(first) == normalise_phone(second)) == (first == second)
