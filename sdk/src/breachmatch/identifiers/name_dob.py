"""The name_dob key: first given name, last family name and birth date.

Taking only the first given name and the last family name makes the key
robust to what dumps drop or add (middle names, a second family name, a
hyphenated first name spelled with a space) while a birth date keeps it
specific. The date must be written in the record: one derived from a CPR
number is not used, so that a wrong CPR cannot also corrupt this key and the
keys stay independent evidence.
"""

from __future__ import annotations

import functools
from typing import TypeGuard

from breachmatch.identifiers.birth_date import normalise_birth_date
from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.names import first_given_name, last_family_name, split_full_name
from breachmatch.identifiers.placeholders import PLACEHOLDER_WORDS, is_placeholder_text

# Name words that stand for "no name": the generic fillers plus Danish usage
# ("NN" for an unidentified person, "Test Testesen" in every test system).
# The same words are fillers as a whole field and as a word of a full name,
# so "NA" reads the same in either (at the price of the Korean name "Na").
_FILLER_NAMES: frozenset[str] = PLACEHOLDER_WORDS | {"nn", "testesen", "testperson", "patient"}


def normalise_name_dob(
    *,
    given_name: str | None,
    family_name: str | None,
    full_name: str | None,
    birth_date: str | None,
) -> str:
    """The "given|family|YYYY-MM-DD" key value; raises `InvalidIdentifier` or `Placeholder`.

    Explicit given/family fields win; a missing one is taken from
    ``full_name``. Name words are letters and digits only, so "|" cannot
    occur inside them and the value splits unambiguously.
    """
    names = _names(given_name, family_name, full_name)
    if names is None:
        raise Placeholder(KeyKind.NAME_DOB)
    if isinstance(names, Reason):
        raise InvalidIdentifier(KeyKind.NAME_DOB, names)
    if birth_date is None:
        raise InvalidIdentifier(KeyKind.NAME_DOB, Reason.DOB_MISSING)
    return f"{names}|{normalise_birth_date(birth_date)}"


@functools.lru_cache(maxsize=1 << 16)
def _names(
    given_name: str | None, family_name: str | None, full_name: str | None
) -> str | Reason | None:
    """The names part ("given|family"), the reason there is none, or None for a filler.

    Cached: names repeat endlessly in a dump, and splitting one costs more
    than the rest of the key. The answer depends on the three fields only.
    """
    given, family = _given_and_family(given_name, family_name, full_name)
    if given in _FILLER_NAMES or family in _FILLER_NAMES:
        return None
    if given is None or family is None:
        fields = (given_name, family_name, full_name)
        if any(raw is not None and is_placeholder_text(raw) for raw in fields):
            return None
        missing = given is None and family is None
        return Reason.NAME_MISSING if missing else Reason.NAME_INCOMPLETE
    return f"{given}|{family}"


def _given_and_family(
    given_name: str | None, family_name: str | None, full_name: str | None
) -> tuple[str | None, str | None]:
    given = first_given_name(given_name) if _present(given_name) else None
    family = last_family_name(family_name) if _present(family_name) else None
    if (given is None or family is None) and _present(full_name):
        split_given, split_family = split_full_name(full_name)
        given = given or split_given
        family = family or split_family
    return given, family


def _present(raw: str | None) -> TypeGuard[str]:
    """A field holding a real value (not None, empty or a filler word)."""
    return raw is not None and not is_placeholder_text(raw)
