"""MRN keys: scoped by facility, spelling-free, never unscoped."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from breachmatch.identifiers import InvalidIdentifier, KeyKind, Placeholder, Reason, normalise_mrn


@pytest.mark.parametrize(
    ("mrn", "facility"),
    [
        ("MRN-001234", "Rigshospitalet"),
        ("mrn 001234", "  RIGSHOSPITALET "),
        ("MRN.001234", "rigshospitalet"),
        ("ＭＲＮ００１２３４", "Rigshospitalet"),
    ],
)
def test_mrn_spellings_give_one_scoped_value(mrn: str, facility: str) -> None:
    assert normalise_mrn(mrn, facility) == "rigshospitalet:MRN001234"


def test_leading_zeros_are_kept() -> None:
    assert normalise_mrn("001234", "Rigshospitalet") != normalise_mrn("1234", "Rigshospitalet")


def test_same_mrn_at_two_facilities_gives_two_values() -> None:
    assert normalise_mrn("1234", "Rigshospitalet") != normalise_mrn("1234", "Herlev Hospital")


def test_facility_with_colons_still_splits_at_the_last_one() -> None:
    # OIDs are common facility ids; the MRN half never holds a ":".
    value = normalise_mrn("ab:12", "urn:oid:1.2.208.176.1.1")
    facility, _, mrn = value.rpartition(":")
    assert (facility, mrn) == ("urn:oid:1.2.208.176.1.1", "AB12")


@pytest.mark.parametrize("facility", [None, "", "  ", "ukendt", "n/a"])
def test_no_facility_gives_no_key(facility: str | None) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_mrn("1234", facility)
    assert caught.value.kind is KeyKind.MRN
    assert caught.value.reason is Reason.MRN_NO_FACILITY


@pytest.mark.parametrize("mrn", ["0", "0000", "-", "n/a", "", "999999", "XXXX"])
def test_filler_mrns_are_placeholders(mrn: str) -> None:
    with pytest.raises(Placeholder) as caught:
        normalise_mrn(mrn, "Rigshospitalet")
    assert caught.value.kind is KeyKind.MRN


def test_overlong_mrn_is_invalid() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_mrn("A1" * 40, "Rigshospitalet")
    assert caught.value.reason is Reason.MRN_TOO_LONG


_mrns = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ./-]{2,15}[0-9]", fullmatch=True)
# Ending in a digit, so no generated facility is a filler word like "na".
_facilities = st.from_regex(r"[A-Za-zÆØÅæøå][A-Za-zÆØÅæøå0-9 .:-]{0,20}[0-9]", fullmatch=True)


# No deadline: first calls load library data lazily and CI boxes are busy.
@settings(deadline=None)
@given(_mrns, _facilities)
def test_mrn_normalisation_is_idempotent(mrn: str, facility: str) -> None:
    try:
        once = normalise_mrn(mrn, facility)
    except Placeholder:
        assume(False)
    scope, _, number = once.rpartition(":")
    assert normalise_mrn(number, scope) == once
    assert normalise_mrn(mrn.lower(), facility.upper()) == once
