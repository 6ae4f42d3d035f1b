"""Person names reduced to the two tokens a name_dob key uses.

Danish letters are transliterated the Danish way (æ->ae, ø->oe, å->aa, so
"Ågård" meets the older spelling "Aagaard"); every other diacritic is
stripped ("José" -> "jose"); everything is case-folded. Apostrophes and dots
vanish ("O'Brien" -> "obrien", "N.N." -> "nn") and every other punctuation
mark separates words, so "Hans-Christian" and "Hans Christian" agree on "hans".
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Letters without a Unicode decomposition, which NFKD cannot strip.
_TRANSLITERATION = str.maketrans(
    {
        "æ": "ae",
        "ø": "oe",
        "å": "aa",
        "œ": "oe",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "ħ": "h",
        "ı": "i",
        "ŧ": "t",
    }
)
_APOSTROPHES_AND_DOTS = str.maketrans("", "", "'’‘ʼ`´.")
_SEPARATOR = re.compile(r"[\W_]+")

# Honorifics before a given name and generational suffixes after a family
# name: not part of the name, and dumps add or drop them at will.
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "miss", "prof", "hr", "fru", "frk"})
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "md", "phd"})


def name_tokens(raw: str) -> list[str]:
    """Transliterated, diacritic-free, case-folded words of a name."""
    return [token for word in raw.split() for token in _word_tokens(word)]


@functools.lru_cache(maxsize=1 << 16)
def _word_tokens(word: str) -> tuple[str, ...]:
    """Tokens of one whitespace-free word; cached, as names repeat endlessly in a dump."""
    text = word.casefold()
    if not text.isascii():
        text = _fold_non_ascii(text)
    return tuple(_SEPARATOR.sub(" ", text.translate(_APOSTROPHES_AND_DOTS)).split())


def _fold_non_ascii(text: str) -> str:
    # NFC first, so a decomposed "a" + ring (macOS, some EHR exports) is seen
    # as "å" and transliterated rather than stripped to a lone "a".
    text = unicodedata.normalize("NFC", text).casefold().translate(_TRANSLITERATION)
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    # Compatibility forms can hide capitals or Danish letters ("ℌ", "ǣ").
    return stripped.casefold().translate(_TRANSLITERATION)


def first_given_name(raw: str) -> str | None:
    """The first given-name word, honorifics skipped; None when there is none."""
    return _first(_without_titles(name_tokens(raw)))


def last_family_name(raw: str) -> str | None:
    """The last family-name word, generational suffixes skipped; None when there is none."""
    return _last(_without_suffixes(name_tokens(raw)))


def split_full_name(raw: str) -> tuple[str | None, str | None]:
    """(first given name, last family name) of a one-field name.

    "Family, Given Middle" splits at the first comma; otherwise the first word
    is the given name and the last the family name ("Given Middle Family").
    A one-word name has no family name.
    """
    family_part, comma, given_part = raw.partition(",")
    if comma:
        return first_given_name(given_part), last_family_name(family_part)
    words = _without_suffixes(_without_titles(name_tokens(raw)))
    if len(words) < 2:
        return _first(words), None
    return words[0], words[-1]


def _without_titles(words: list[str]) -> list[str]:
    start = 0
    while start < len(words) and words[start] in _TITLES:
        start += 1
    return words[start:]


def _without_suffixes(words: list[str]) -> list[str]:
    end = len(words)
    while end > 0 and words[end - 1] in _SUFFIXES:
        end -= 1
    return words[:end]


def _first(words: list[str]) -> str | None:
    return words[0] if words else None


def _last(words: list[str]) -> str | None:
    return words[-1] if words else None
