"""name_dob keys: Danish transliteration, name splitting, birth-date spellings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from breachmatch.identifiers import (
    InvalidIdentifier,
    KeyKind,
    Placeholder,
    Reason,
    normalise_birth_date,
    normalise_name_dob,
)
from breachmatch.identifiers.names import name_tokens


def name_dob(
    *,
    given_name: str | None = None,
    family_name: str | None = None,
    full_name: str | None = None,
    birth_date: str | None = "1980-02-29",
) -> str:
    return normalise_name_dob(
        given_name=given_name,
        family_name=family_name,
        full_name=full_name,
        birth_date=birth_date,
    )


# --- names -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        {"full_name": "Søren Ærø Ågård"},
        {"full_name": "Soeren AERO aagaard"},
        {"full_name": "SØREN ÆRØ ÅGÅRD"},
        {"full_name": "  søren   aagaard "},
        {"full_name": "Søren A\u030agård"},  # decomposed å (macOS, some exports)
        {"full_name": "Ågård, Søren Ærø"},
        {"full_name": "AAGAARD, SOEREN"},
        {"given_name": "Søren Ærø", "family_name": "Ågård"},
        {"given_name": "Soeren", "family_name": "Aagaard"},
        {"given_name": "Søren", "full_name": "Søren Ærø Ågård"},
        {"family_name": "Ågård", "full_name": "Søren Hansen"},
    ],
)
def test_spellings_of_one_danish_name_give_one_key(spelling: dict[str, str]) -> None:
    assert name_dob(**spelling) == "soeren|aagaard|1980-02-29"


@pytest.mark.parametrize(
    ("full_name", "given", "family"),
    [
        ("José Müller", "jose", "muller"),
        ("Łukasz Wałęsa", "lukasz", "walesa"),
        ("Seán O'Brien", "sean", "obrien"),
        ("Hans-Christian Andersen", "hans", "andersen"),
        ("Hans Christian Andersen", "hans", "andersen"),
        ("Anne Hansen-Jensen", "anne", "jensen"),
        ("Hansen-Jensen, Anne", "anne", "jensen"),
        ("Dr. John Smith Jr.", "john", "smith"),
        ("Fru Mette Frederiksen", "mette", "frederiksen"),
        ("J.P. Jacobsen", "jp", "jacobsen"),
        ("Þóra Guðmundsdóttir", "thora", "gudmundsdottir"),
    ],
)
def test_full_names_split_into_first_given_and_last_family(
    full_name: str, given: str, family: str
) -> None:
    assert name_dob(full_name=full_name) == f"{given}|{family}|1980-02-29"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"full_name": "Søren"}, Reason.NAME_INCOMPLETE),
        ({"given_name": "Søren"}, Reason.NAME_INCOMPLETE),
        ({"family_name": "Hansen"}, Reason.NAME_INCOMPLETE),
        ({"full_name": "Dr. Jr."}, Reason.NAME_MISSING),
        ({}, Reason.NAME_MISSING),
    ],
)
def test_a_key_needs_both_name_parts(fields: dict[str, str], reason: Reason) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        name_dob(**fields)
    assert caught.value.kind is KeyKind.NAME_DOB
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    "fields",
    [
        {"full_name": "Test Testesen"},
        {"full_name": "NN"},
        {"full_name": "N.N. Hansen"},
        {"given_name": "ukendt", "family_name": "Hansen"},
        {"given_name": "n/a", "family_name": "Hansen"},
        {"given_name": "", "family_name": "Hansen"},
        {"full_name": "Unknown Patient"},
        {"full_name": "xxx xxx"},
        {"full_name": "-"},
    ],
)
def test_filler_names_are_placeholders(fields: dict[str, str]) -> None:
    with pytest.raises(Placeholder) as caught:
        name_dob(**fields)
    assert caught.value.kind is KeyKind.NAME_DOB


# No deadline: first calls load library data lazily and CI boxes are busy.
@settings(deadline=None)
@given(st.text(max_size=40))
def test_name_tokens_are_idempotent(text: str) -> None:
    once = name_tokens(text)
    assert name_tokens(" ".join(once)) == once
    assert all(token.isalnum() for token in once)


# No "h", "i", "m", "p", "r", "s": no honorific or suffix ("dr", "ii", "phd") can form.
_name_words = st.lists(
    st.text(alphabet="abcdefgklnotuvwyzæøåéü", min_size=1, max_size=8), min_size=2, max_size=4
)


@settings(deadline=None)
@given(
    _name_words,
    st.sampled_from([str.upper, str.title, str.lower]),
    st.sampled_from([" ", "-", "_", " - "]),
)
def test_case_and_separators_do_not_change_the_key(
    words: list[str], recase: Callable[[str], str], separator: str
) -> None:
    try:
        plain = name_dob(full_name=" ".join(words))
    except Placeholder:
        assume(False)
    assert name_dob(full_name=recase(separator.join(words))) == plain
    assert name_dob(given_name=recase(words[0]), family_name=recase(words[-1])) == plain


# --- birth dates -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "1980-02-29",
        "29-02-1980",
        "29.02.1980",
        "29/02/1980",
        "19800229",
        "29021980",
        "1980/02/29",
        "1980.2.29",
        "1980-02-29T00:00:00",
        "1980-02-29 00:00:00",
        "1980-02-29T00:00:00Z",
        " 29.2.1980 ",
    ],
)
def test_birth_date_spellings_give_iso(raw: str) -> None:
    assert normalise_birth_date(raw) == "1980-02-29"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1981-02-29", Reason.DOB_BAD_DATE),  # not a leap year
        ("29.02.1900", Reason.DOB_BAD_DATE),  # centuries are leap years only by 400
        ("31.04.1980", Reason.DOB_BAD_DATE),
        ("1980-13-01", Reason.DOB_BAD_DATE),
        ("32021980", Reason.DOB_BAD_DATE),
        ("29-02-80", Reason.DOB_FORMAT),  # two-digit year
        ("Feb 29 1980", Reason.DOB_FORMAT),
        ("1980-02-29x", Reason.DOB_FORMAT),
        ("29.02/1980", Reason.DOB_FORMAT),  # mixed separators
        ("1850-06-01", Reason.DOB_RANGE),
        ("2999-01-01", Reason.DOB_RANGE),
    ],
)
def test_impossible_birth_dates_are_invalid(raw: str, reason: Reason) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_birth_date(raw)
    assert caught.value.kind is KeyKind.NAME_DOB
    assert caught.value.reason is reason


def test_leap_day_of_2000_is_valid() -> None:
    assert normalise_birth_date("29.02.2000") == "2000-02-29"


def test_tomorrow_is_out_of_range() -> None:
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_birth_date(tomorrow.isoformat())
    assert caught.value.reason is Reason.DOB_RANGE


@pytest.mark.parametrize(
    "raw", ["0000-00-00", "00.00.0000", "00000000", "1900-01-01", "ukendt", ""]
)
def test_filler_birth_dates_are_placeholders(raw: str) -> None:
    with pytest.raises(Placeholder):
        normalise_birth_date(raw)


def test_missing_birth_date_gives_no_key() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        name_dob(full_name="Søren Hansen", birth_date=None)
    assert caught.value.reason is Reason.DOB_MISSING


_birth_dates = st.dates(min_value=dt.date(1858, 1, 2), max_value=dt.date(2024, 12, 31)).filter(
    lambda day: day != dt.date(1900, 1, 1)
)


@settings(deadline=None)
@given(
    _birth_dates,
    st.sampled_from(
        ["{:%Y-%m-%d}", "{:%d-%m-%Y}", "{:%d.%m.%Y}", "{:%d/%m/%Y}", "{:%Y%m%d}", "{:%d%m%Y}"]
    ),
)
def test_every_spelling_of_a_date_gives_its_iso_form(day: dt.date, spelling: str) -> None:
    iso = normalise_birth_date(spelling.format(day))
    assert iso == day.isoformat()
    assert normalise_birth_date(iso) == iso
