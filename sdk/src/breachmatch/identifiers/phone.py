"""Phone numbers, as E.164 via phonenumbers (default region DK).

"+45 12 34 56 78", "12345678" and "004512345678" are one number, and so one
key. A number only has to be *possible* (right length for its country), not
*valid* by phonenumbers' range tables: those tables change between releases,
and ingest and a hospital must never disagree because one upgraded first.

Letters are refused (after an extension suffix is dropped): phonenumbers
would read them as a keypad vanity number, turning a masked "12 34 XX XX"
into a real-looking number that belongs to someone else.

Danish numbers (eight digits, never starting with 0, with or without +45 or
0045) are most of every dump and take a fast path; a test holds it equal to
phonenumbers. Other numbers are parsed, with an LRU cache in front.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.placeholders import is_placeholder_text, is_repeated_filler
from breachmatch.identifiers.separators import fold_width

DEFAULT_REGION = "DK"

_EXTENSION = re.compile(r"\s*(?:ext|extn|extension|lokal|lok|x|#)\.?\s*[0-9]+\s*$", re.IGNORECASE)
_MASK = re.compile(r"[*]|xx", re.IGNORECASE)
_SHAPE = re.compile(r"\s*\(?\s*\+?[0-9\s().\-/]+")
_NOT_DIGIT = re.compile(r"[^0-9]+")
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE
_PLAIN = re.compile(r"\+?[0-9][0-9 ]*")
_DANISH = re.compile(r"(?:\+45|0045)?([1-9][0-9]{7})")


def normalise_phone(raw: str) -> str:
    """The E.164 key value ("+4512345678"); raises `InvalidIdentifier` or `Placeholder`."""
    text = fold_width(raw)
    if text.isascii() and _PLAIN.fullmatch(text):
        # Digits and spaces, perhaps after a "+" (most of a dump): no filler word,
        # mask, extension or other separator, so dropping the spaces is all there is.
        canonical = text.replace(" ", "")
    else:
        if is_placeholder_text(text) or _MASK.search(text):
            raise Placeholder(KeyKind.PHONE)
        number = _EXTENSION.sub("", text)
        if _SHAPE.fullmatch(number) is None:
            raise InvalidIdentifier(KeyKind.PHONE, Reason.PHONE_SYNTAX)
        digits = _NOT_DIGIT.sub("", number)
        canonical = f"+{digits}" if "+" in number else digits
    danish = _DANISH.fullmatch(canonical)
    if danish is None:
        return _e164(canonical)
    if is_repeated_filler(danish[1]):
        raise Placeholder(KeyKind.PHONE)
    return "+45" + danish[1]


@functools.lru_cache(maxsize=1 << 16)
def _e164(canonical: str) -> str:
    """E.164 for a "+"-and-digits string; cached because parsing dominates the cost.

    Only successes are cached (exceptions are not), so the cache holds key
    values the caller has already been given, nothing more.
    """
    try:
        parsed: phonenumbers.PhoneNumber | None = phonenumbers.parse(canonical, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None:
        raise InvalidIdentifier(KeyKind.PHONE, Reason.PHONE_SYNTAX)
    if is_repeated_filler(str(parsed.national_number)):
        raise Placeholder(KeyKind.PHONE)
    if phonenumbers.is_possible_number_with_reason(parsed) != _POSSIBLE:
        raise InvalidIdentifier(KeyKind.PHONE, Reason.PHONE_LENGTH)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
