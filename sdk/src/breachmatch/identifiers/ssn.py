"""US Social Security numbers.

Rules (SSA): nine digits AAA-GG-SSSS; area 000, 666 and 900-999 are never
issued, nor group 00 or serial 0000. Repeated digits and the two numbers
famous for appearing in advertising and documentation are fillers, not people.
The key value is the nine digits without separators.
"""

from __future__ import annotations

import re

from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.placeholders import is_placeholder_text, is_repeated_filler
from breachmatch.identifiers.separators import compact

_SHAPE = re.compile(r"[0-9]{9}")
# 078-05-1120 (the Woolworth wallet card) and 123-45-6789 (every form's example).
_SPECIMENS = frozenset({"078051120", "123456789"})


def normalise_ssn(raw: str) -> str:
    """The 9-digit SSN key value; raises `InvalidIdentifier` or `Placeholder`."""
    if is_placeholder_text(raw):
        raise Placeholder(KeyKind.SSN)
    number = compact(raw)
    if is_repeated_filler(number) or number in _SPECIMENS or "X" in number or "*" in number:
        raise Placeholder(KeyKind.SSN)
    if _SHAPE.fullmatch(number) is None:
        raise InvalidIdentifier(KeyKind.SSN, Reason.SSN_FORMAT)
    area = number[:3]
    if area in ("000", "666") or area[0] == "9":
        raise InvalidIdentifier(KeyKind.SSN, Reason.SSN_AREA)
    if number[3:5] == "00":
        raise InvalidIdentifier(KeyKind.SSN, Reason.SSN_GROUP)
    if number[5:] == "0000":
        raise InvalidIdentifier(KeyKind.SSN, Reason.SSN_SERIAL)
    return number
