"""CPR and SSN normalisation: the rules, the spellings, the fillers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breachmatch.identifiers import (
    InvalidIdentifier,
    KeyKind,
    Placeholder,
    Reason,
    normalise_cpr,
    normalise_ssn,
)

# --- CPR ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "010180-1234",
        "0101801234",
        "010180 1234",
        "01.01.80.1234",
        "01 01 80 1234",
        "010180\u20131234",  # en dash from a word processor
        "010180\u00a01234",  # non-breaking space
        "０１０１８０－１２３４",  # full-width digits
        "  010180-1234\n",
    ],
)
def test_cpr_spellings_give_the_ten_characters(raw: str) -> None:
    assert normalise_cpr(raw) == "0101801234"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0203291WQ3", "0203291WQ3"),  # national X-eCPR, 1929
        ("1308781os6", "1308781OS6"),  # letters in lower case
        ("310105-7JC9", "3101057JC9"),  # X-eCPR, 2005
        ("150643-0SJ1", "1506430SJ1"),  # regional D-eCPR, 1943
        ("150605-6sj2", "1506056SJ2"),  # regional D-eCPR, 2005
        ("010190-5AB1", "0101905AB1"),  # D-eCPR, 1890
    ],
)
def test_e_cpr_replacement_numbers_with_letters_are_accepted(raw: str, expected: str) -> None:
    assert normalise_cpr(raw) == expected


@pytest.mark.parametrize("raw", ["0203292WQ3", "0203298WQ3", "020329-WQ13", "0203291W13"])
def test_e_cpr_needs_a_century_digit_then_two_letters(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_cpr(raw)
    assert caught.value.reason is Reason.CPR_FORMAT


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        # 29 February 2000 exists, 29 February 1900 does not: the 7th digit decides.
        ("290200-0234", False),  # 0-3: 1900s
        ("290200-3234", False),
        ("290200-4234", True),  # 4 and 9 with YY <= 36: 2000s
        ("290200-9234", True),
        ("290200-5234", True),  # 5-8 with YY <= 57: 2000s
        ("290200-8234", True),
        ("290296-1234", True),  # 1996 is a leap year
        ("290297-1234", False),
        ("290201-4234", False),
        # 4/9 with YY >= 37 and 5-8 with YY >= 58 are in the past century (a
        # 20YY reading would be a future birth date and be refused).
        ("010137-4234", True),
        ("010199-9234", True),
        ("010158-5234", True),
        ("311299-8234", True),
        # e-CPR century digits: 0/1 1900s, 5 1800s, 6/7 2000s.
        ("290200-0AB1", False),
        ("290200-1AB1", False),
        ("290200-5AB1", False),
        ("290200-6AB1", True),
        ("290200-7AB1", True),
    ],
)
def test_cpr_century_comes_from_the_seventh_character(raw: str, valid: bool) -> None:
    if valid:
        assert normalise_cpr(raw) == raw.replace("-", "")
    else:
        with pytest.raises(InvalidIdentifier) as caught:
            normalise_cpr(raw)
        assert caught.value.reason is Reason.CPR_BAD_DATE


@pytest.mark.parametrize(
    "raw",
    ["320180-1234", "000180-1234", "011380-1234", "010080-1234", "310480-1234", "920180-1234"],
)
def test_cpr_with_an_impossible_date_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_cpr(raw)
    assert caught.value.kind is KeyKind.CPR
    assert caught.value.reason is Reason.CPR_BAD_DATE


def test_cpr_replacement_form_with_day_plus_sixty_is_accepted() -> None:
    # CPR-kontoret's replacement numbers raise the first day digit by 6.
    assert normalise_cpr("670180-1234") == "6701801234"


def _fails_modulus_11(number: str) -> bool:
    weights = (4, 3, 2, 7, 6, 5, 4, 3, 2, 1)
    return sum(int(d) * w for d, w in zip(number, weights, strict=True)) % 11 != 0


def test_cpr_without_modulus_11_is_accepted() -> None:
    number = "0101801235"
    assert _fails_modulus_11(number)
    assert normalise_cpr(number) == number


@pytest.mark.parametrize("raw", ["01018012345", "010180123", "0101801234x", "0101801A34", "CPR"])
def test_cpr_of_the_wrong_shape_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_cpr(raw)
    assert caught.value.reason is Reason.CPR_FORMAT


@pytest.mark.parametrize(
    "raw",
    [
        "0000000000",
        "000000-0000",
        "1111111111",
        "111111-1111",
        "9999999999",
        "XXXXXX-XXXX",
        "010180-0000",  # birth date known, serial not
        "010180-xxxx",
        "010180-****",
        "ukendt",
        "Unknown",
        "n/a",
        "-",
        "",
        "   ",
    ],
)
def test_cpr_fillers_are_placeholders(raw: str) -> None:
    with pytest.raises(Placeholder) as caught:
        normalise_cpr(raw)
    assert caught.value.kind is KeyKind.CPR


_cpr_dates = st.builds(
    "{:02d}{:02d}{:02d}".format,
    st.integers(1, 28),
    st.integers(1, 12),
    st.integers(0, 99),
)
_valid_cprs = st.one_of(
    st.builds(str.__add__, _cpr_dates, st.from_regex(r"[0-3][0-9]{2}[1-9]", fullmatch=True)),
    st.builds(str.__add__, _cpr_dates, st.from_regex(r"[01][A-Z]{2}[0-9]", fullmatch=True)),
).filter(lambda number: len(set(number)) > 1)  # 1111111111 is a filler, not a person


# No deadline: first calls load library data lazily and CI boxes are busy.
@settings(deadline=None)
@given(_valid_cprs)
def test_cpr_normalisation_is_idempotent(number: str) -> None:
    once = normalise_cpr(number)
    assert normalise_cpr(once) == once


@settings(deadline=None)
@given(_valid_cprs, st.sampled_from(["-", " ", ".", "\u2011"]), st.booleans())
def test_cpr_spelling_does_not_change_the_key(number: str, separator: str, lower: bool) -> None:
    messy = f" {number[:6]}{separator}{number[6:]} "
    assert normalise_cpr(messy.lower() if lower else messy) == normalise_cpr(number)


@settings(deadline=None)
@given(_valid_cprs, _valid_cprs)
def test_different_cprs_give_different_values(first: str, second: str) -> None:
    assert (normalise_cpr(first) == normalise_cpr(second)) == (first == second)


# --- SSN ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["536-22-1234", "536221234", "536 22 1234", "536.22.1234"])
def test_ssn_spellings_give_nine_digits(raw: str) -> None:
    assert normalise_ssn(raw) == "536221234"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("000-12-3456", Reason.SSN_AREA),
        ("666-12-3456", Reason.SSN_AREA),
        ("900-12-3456", Reason.SSN_AREA),
        ("987-65-4321", Reason.SSN_AREA),
        ("536-00-1234", Reason.SSN_GROUP),
        ("536-22-0000", Reason.SSN_SERIAL),
        ("53622123", Reason.SSN_FORMAT),
        ("5362212345", Reason.SSN_FORMAT),
        ("536-2A-1234", Reason.SSN_FORMAT),
    ],
)
def test_ssn_rules_reject_numbers_never_issued(raw: str, reason: Reason) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_ssn(raw)
    assert caught.value.kind is KeyKind.SSN
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    "raw",
    [
        "000-00-0000",
        "111-11-1111",
        "078-05-1120",
        "123-45-6789",
        "XXX-XX-1234",
        "***-**-1234",
        "na",
    ],
)
def test_ssn_fillers_and_specimens_are_placeholders(raw: str) -> None:
    with pytest.raises(Placeholder) as caught:
        normalise_ssn(raw)
    assert caught.value.kind is KeyKind.SSN


_valid_ssns = st.builds(
    "{:03d}-{:02d}-{:04d}".format,
    st.integers(1, 899).filter(lambda area: area != 666),
    st.integers(1, 99),
    st.integers(1, 9999),
).filter(lambda ssn: len(set(ssn.replace("-", ""))) > 1 and ssn not in ("123-45-6789",))


@settings(deadline=None)
@given(_valid_ssns, st.sampled_from(["-", " ", "", "."]))
def test_ssn_normalisation_is_idempotent_and_spelling_free(ssn: str, separator: str) -> None:
    once = normalise_ssn(ssn)
    assert normalise_ssn(once) == once
    assert normalise_ssn(ssn.replace("-", separator)) == once
