"""By-value salvage: the identifiers a row that could not be read still shows.

A bad row's cells no longer line up with its header, but some values say
what they are by their shape alone: a ten-digit number that is a valid CPR
number (with or without the dash), a valid e-mail address. A patient whose
row was mangled is still a patient to tell, so when a bad row holds exactly
one distinct value of such a kind it yields a record with that identifier.
Two different CPR numbers in one row (a patient and a relative? two rows run
together?) are ambiguous and give no CPR at all; the same for e-mails.
Phones, names and dates are never salvaged: an eight-digit number or a date
could be anything.

The salvaged record's categories are only those its identifiers imply
(``national_id``, ``contact``): which cells held a diagnosis or a note is
exactly what a bad row cannot tell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from breachmatch.identifiers import normalise_cpr, normalise_email
from breachmatch.identifiers.errors import IdentifierError
from breachmatch.records import Category, PersonRecord

_CPR_SHAPED = re.compile(r"\d{6}[- ]?\d{4}")
_EMAIL_SHAPED = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_JSON_STRING = re.compile(r'"((?:[^"\\\r\n]|\\.)*)"')
#: Quote characters a cell of a damaged row may still be wrapped in.
_WRAPPING = "\"' "


def json_strings(line: str) -> tuple[str, ...]:
    """The string literals of a (possibly broken) JSON line: its cells for salvage."""
    return tuple(_JSON_STRING.findall(line))


def _unique(found: dict[str, str]) -> str | None:
    return next(iter(found.values())) if len(found) == 1 else None


def salvage(cells: Iterable[str]) -> PersonRecord | None:
    """A record of the identifiers `cells` show unambiguously by value, or None."""
    cprs: dict[str, str] = {}
    emails: dict[str, str] = {}
    for cell in cells:
        text = cell.strip(_WRAPPING)
        if len(text) < 6:
            continue
        try:
            if _CPR_SHAPED.fullmatch(text):
                cprs.setdefault(normalise_cpr(text), text)
            elif "@" in text and _EMAIL_SHAPED.fullmatch(text):
                emails.setdefault(normalise_email(text), text)
        except IdentifierError:
            continue
    cpr, email = _unique(cprs), _unique(emails)
    if cpr is None and email is None:
        return None
    categories = Category(0)
    if cpr is not None:
        categories |= Category.NATIONAL_ID
    if email is not None:
        categories |= Category.CONTACT
    return PersonRecord(cpr=cpr, email=email, categories=categories)
