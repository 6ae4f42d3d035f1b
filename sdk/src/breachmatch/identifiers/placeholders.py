"""Recognising values that mean "no value".

Dumps and EHR exports fill unknown fields with words ("ukendt", "n/a"),
filler digits (0000000000, 1111111111) or masks ("******"). Turning one of
those into a key would make every row with the same filler match every
other, so each normaliser asks these helpers first.
"""

from __future__ import annotations

import re

#: Whole-field fillers, compared case-folded with whitespace collapsed.
PLACEHOLDER_WORDS: frozenset[str] = frozenset(
    {
        "unknown",
        "ukendt",
        "uoplyst",
        "ikke oplyst",
        "mangler",
        "ingen",
        "test",
        "dummy",
        "n/a",
        "#n/a",
        "n.a.",
        "na",
        "nan",
        "none",
        "null",
        "nil",
        "missing",
        "not available",
        "not applicable",
        "undefined",
        "tbd",
        "anonymous",
        "anonym",
        "x",
        "xx",
        "xxx",
    }
)

# A value with no letter or digit at all ("-", "--", "?", "...", "***").
_HAS_ALNUM = re.compile(r"[^\W_]")


def is_placeholder_text(raw: str) -> bool:
    """True for empty/whitespace, a filler word, or a value with no letter or digit."""
    text = raw.casefold()
    # All letters and digits (most CPR numbers and phones): nothing to collapse.
    if text.isalnum():
        return text in PLACEHOLDER_WORDS
    text = " ".join(text.split())
    return text in PLACEHOLDER_WORDS or _HAS_ALNUM.search(text) is None


def is_repeated_filler(chars: str) -> bool:
    """True for one character repeated (0000000000, 1111111111, XXXXXXXXXX).

    A single non-zero character is not filler (a small clinic's MRN may be
    "7"); a lone "0" is.
    """
    if not chars:
        return True
    first = chars[0]
    return chars.count(first) == len(chars) and (len(chars) >= 2 or first == "0")
