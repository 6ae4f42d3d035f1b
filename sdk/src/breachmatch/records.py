"""The person record every reader produces and every consumer reads.

Ingest (leak dumps) and the SDK (patient exports) parse very different files,
but both reduce a row to this one shape so that the same normalisation code
(`breachmatch.identifiers`) sees the same fields on both sides — the only way
tokens computed by the operator and by a hospital can ever be equal.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field


class Category(enum.IntFlag):
    """Data categories a breach exposed for one person (the filter label).

    One byte on the wire, so at most eight members; the values are part of the
    filter format and must never be renumbered.
    """

    CONTACT = 1
    NATIONAL_ID = 2
    MEDICAL_HISTORY = 4
    REFERRALS = 8
    MEDICATION = 16
    DIAGNOSES = 32
    FREE_TEXT = 64

    @classmethod
    def legend(cls) -> dict[str, int]:
        """Name → bit, as published in every breach manifest."""
        return {member.name.lower(): int(member) for member in cls if member.name}

    def names(self) -> list[str]:
        """Lower-case names of the set bits, in bit order."""
        return list(_names_of(int(self)))

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> Category:
        result = cls(0)
        for name in names:
            result |= cls[name.upper()]
        return result


@functools.cache
def _names_of(value: int) -> tuple[str, ...]:
    """`Category.names`, once per label value: ingest asks for every row of a dump."""
    return tuple(m.name.lower() for m in Category if m.name and m & value)


#: Canonical identifier fields a column mapping can target.
IDENTIFIER_FIELDS: tuple[str, ...] = (
    "cpr",
    "ssn",
    "mrn",
    "facility",
    "email",
    "phone",
    "full_name",
    "given_name",
    "family_name",
    "birth_date",
)

#: Fields a hospital keeps for outreach; never sent to the matcher.
CONTACT_FIELDS: tuple[str, ...] = ("patient_id", "address", "language")


@dataclass(slots=True)
class PersonRecord:
    """One person as read from a dump or export, before normalisation.

    Values are the raw strings found in the source (normalisation happens in
    `breachmatch.identifiers`), so readers stay simple and never decide what
    counts as a valid identifier.
    """

    cpr: str | None = None
    ssn: str | None = None
    mrn: str | None = None
    facility: str | None = None
    email: str | None = None
    phone: str | None = None
    full_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    birth_date: str | None = None
    patient_id: str | None = None
    address: str | None = None
    language: str | None = None
    #: Extra e-mail addresses / phones found in the same row (e.g. "Mobil" and "Telefon").
    extra_emails: list[str] = field(default_factory=list)
    extra_phones: list[str] = field(default_factory=list)
    categories: Category = field(default=Category(0))
