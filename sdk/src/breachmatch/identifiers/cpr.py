"""Danish CPR numbers (personnummer), including e-CPR replacement numbers.

Rules (CPR-kontoret; Sundhedsdatastyrelsen for e-CPR):

* DDMMYY then four characters. Ordinary numbers are all digits; the 7th digit
  with YY gives the century (0-3: 1900s; 4 and 9: 2000s for YY <= 36, else
  1900s; 5-8: 2000s for YY <= 57, else 1800s).
* Health-sector replacement numbers (D-eCPR and national X-eCPR) have the
  shape DDMMYY C AA G: C is a century digit (0/1: 1900s, 5: 1800s, 6/7:
  2000s), AA two letters A-Z, G a digit.
* CPR-kontoret's recommended replacement form raises the first day digit by
  6 (born the 7th -> "67"), so a day of 61-91 is read as day - 60.
* Modulus-11 is deliberately not checked: numbers without it have been issued
  since 2007. The birth date must exist and not lie in the future.

The key value is the ten characters, letters upper-case: the number itself,
so the same person always gives the same key however it was typed.
"""

from __future__ import annotations

import datetime as dt
import re

from breachmatch.identifiers.birth_date import today
from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.placeholders import is_placeholder_text, is_repeated_filler
from breachmatch.identifiers.separators import compact

_SHAPE = re.compile(r"[0-9]{6}(?:[0-9]{4}|[01567][A-Z]{2}[0-9])")
# Serials that mean "birth date known, number not": zeros or a mask.
_FILLER_SERIALS = frozenset({"0000", "XXXX", "****"})
_REPLACEMENT_DAY_OFFSET = 60
_E_CPR_CENTURY = {"0": 1900, "1": 1900, "5": 1800, "6": 2000, "7": 2000}


def normalise_cpr(raw: str) -> str:
    """The 10-character CPR key value; raises `InvalidIdentifier` or `Placeholder`."""
    number = _typed_digits(raw)
    plain = number is not None
    if number is None:
        if is_placeholder_text(raw):
            raise Placeholder(KeyKind.CPR)
        number = compact(raw)
    if is_repeated_filler(number) or (len(number) == 10 and number[6:] in _FILLER_SERIALS):
        raise Placeholder(KeyKind.CPR)
    # Ten plain digits always have the shape; only other values need the pattern.
    if not (plain and len(number) == 10) and _SHAPE.fullmatch(number) is None:
        raise InvalidIdentifier(KeyKind.CPR, Reason.CPR_FORMAT)
    if _birth_date(number) is None:
        raise InvalidIdentifier(KeyKind.CPR, Reason.CPR_BAD_DATE)
    return number


def _typed_digits(raw: str) -> str | None:
    """The digits of plain ASCII digits, or of ten with one "-" or " " after the sixth.

    Most of a dump is typed so: never a filler word, and dropping that one
    character is all `compact` would do. Anything else gives None.
    """
    if not raw.isascii():
        return None
    if raw.isdigit():
        return raw
    if len(raw) == 11 and raw[6] in "- ":
        digits = raw[:6] + raw[7:]
        if digits.isdigit():
            return digits
    return None


def _birth_date(number: str) -> dt.date | None:
    """The birth date a well-shaped CPR number encodes, or None if it is impossible."""
    day = int(number[0:2])
    if day > _REPLACEMENT_DAY_OFFSET:
        day -= _REPLACEMENT_DAY_OFFSET
    year = int(number[4:6]) + _century(number[4:6], number[6], has_letters=number[7].isalpha())
    try:
        born = dt.date(year, int(number[2:4]), day)
    except ValueError:
        return None
    return born if born <= today() else None


def _century(yy: str, seventh: str, *, has_letters: bool) -> int:
    """The century of birth, by the rules in the module docstring."""
    if has_letters:
        return _E_CPR_CENTURY[seventh]
    digit, year = int(seventh), int(yy)
    if digit <= 3:
        return 1900
    if digit in (4, 9):
        return 2000 if year <= 36 else 1900
    return 2000 if year <= 57 else 1800
