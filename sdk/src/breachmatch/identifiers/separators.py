"""Stripping the punctuation people type inside numeric identifiers.

CPR numbers, SSNs and phone numbers arrive as "010180-1234", "010180 1234",
"01.01.80.1234", with non-breaking spaces or typographic dashes from word
processors, or in full-width digits from East Asian input methods; all of
them mean the same number.
"""

from __future__ import annotations

import unicodedata

_SEPARATORS = "-\u2010\u2011\u2012\u2013\u2014\u2212./"
_DROP_SEPARATORS = str.maketrans("", "", _SEPARATORS)


def fold_width(raw: str) -> str:
    """Full-width and other compatibility forms folded to plain ones (NFKC)."""
    return raw if raw.isascii() else unicodedata.normalize("NFKC", raw)


def compact(raw: str) -> str:
    """The value without whitespace or separators, width folded, upper-cased."""
    return "".join(fold_width(raw).split()).translate(_DROP_SEPARATORS).upper()
