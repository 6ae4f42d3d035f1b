"""Header comparison keys, and the test that keeps data out of header lists.

Leak dumps spell the same column a dozen ways ("CPR-nr.", "cpr_nummer",
"Fødselsdato", "FODSELSDATO", "foedselsdato"). Matching is done on a
*key*: case-folded, Danish letters transliterated, diacritics stripped and
everything that is not a letter or digit dropped, so synonym tables list each
word once and a dict lookup does the rest.

Header names are shown to operators (``--inspect``) and may reach logs, but a
file without a header row turns its first *data* row into "headers", and JSON
objects are sometimes keyed by CPR number. `looks_like_data` is the one rule
that decides a name must not be shown.
"""

from __future__ import annotations

import unicodedata

# æ, ø and ß do not decompose under NFKD, so they are spelled out the way a
# Dane types them on an ASCII keyboard (the same transliteration the
# identifier normaliser uses for names).
_TRANSLITERATE = str.maketrans({"æ": "ae", "ø": "oe", "å": "aa", "ß": "ss"})
# The other common ASCII spelling: the letter without its stroke or ring.
_STRIP_DANISH = str.maketrans({"æ": "ae", "ø": "o", "å": "a"})


def header_key(header: str) -> str:
    """The comparison key of a header: lower-case ASCII letters and digits only."""
    folded = header.casefold().translate(_TRANSLITERATE)
    decomposed = unicodedata.normalize("NFKD", folded)
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum())


def spelling_keys(word: str) -> set[str]:
    """Every key a header meaning `word` may arrive as (ø as "oe" and as "o")."""
    folded = word.casefold()
    return {header_key(folded), header_key(folded.translate(_STRIP_DANISH))}


def looks_like_data(text: str) -> bool:
    """True when `text` is shaped like a value rather than a column name.

    A CPR number, phone number or date has six or more digits; an e-mail
    address has an "@". No real header has either, so this errs on the side
    of hiding a name rather than printing a patient's identifier.
    """
    if "@" in text:
        return True
    return sum(ch.isdigit() for ch in text) >= 6


def display_name(text: str) -> str:
    """`text` if it is safe to print, else a placeholder that says why not."""
    return "<value-like name hidden>" if looks_like_data(text) else text
