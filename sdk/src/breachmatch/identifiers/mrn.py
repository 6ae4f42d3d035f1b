"""Medical record numbers, scoped by the facility that issued them.

An MRN is only unique inside one hospital's EHR, so the key value is
"<facility>:<mrn>". Both halves are normalised so that typing differences do
not split one patient in two: the facility is case-folded with whitespace
collapsed; the MRN keeps its letters and digits only (upper-case), which also
guarantees it holds no ":" and the value splits unambiguously at the last one.
Leading zeros are kept: "0123" and "123" may be different patients.
"""

from __future__ import annotations

import re
import unicodedata

from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.placeholders import is_placeholder_text, is_repeated_filler
from breachmatch.identifiers.separators import fold_width

_NOT_ALNUM = re.compile(r"[\W_]+")
#: Longer than any EHR's record number; a longer value is a misplaced column.
MRN_MAX_LENGTH = 64


def normalise_mrn(raw: str, facility: str | None) -> str:
    """The "<facility>:<mrn>" key value; raises `InvalidIdentifier` or `Placeholder`.

    Without a usable facility there is no key (reason ``mrn_no_facility``):
    an unscoped MRN would match the same number at every other hospital.
    """
    if is_placeholder_text(raw):
        raise Placeholder(KeyKind.MRN)
    mrn = _NOT_ALNUM.sub("", fold_width(raw)).upper()
    if is_repeated_filler(mrn):
        raise Placeholder(KeyKind.MRN)
    if len(mrn) > MRN_MAX_LENGTH:
        raise InvalidIdentifier(KeyKind.MRN, Reason.MRN_TOO_LONG)
    if facility is None or is_placeholder_text(facility):
        raise InvalidIdentifier(KeyKind.MRN, Reason.MRN_NO_FACILITY)
    return f"{_normalise_facility(facility)}:{mrn}"


def _normalise_facility(raw: str) -> str:
    """A facility id as used in MRN keys: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", raw.casefold()).split())
