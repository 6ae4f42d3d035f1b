"""All match keys of one person record, with counts of what gave none.

This is the one entry point ingest and the SDK share. It never raises for a
bad value: a dump row with a broken phone still yields its CPR key, and the
reason codes and placeholder kinds it returns feed ingest's data-quality
report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from breachmatch.identifiers.cpr import normalise_cpr
from breachmatch.identifiers.email_address import normalise_email
from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder
from breachmatch.identifiers.kinds import KeyKind, MatchKey
from breachmatch.identifiers.mrn import normalise_mrn
from breachmatch.identifiers.name_dob import normalise_name_dob
from breachmatch.identifiers.phone import normalise_phone
from breachmatch.identifiers.ssn import normalise_ssn
from breachmatch.records import PersonRecord

_Raw = TypeVar("_Raw", str, PersonRecord)


@dataclass(slots=True)
class KeyExtraction:
    """Keys of one record (deduplicated, in `KeyKind` order) and why others are missing.

    ``invalid`` holds (kind, reason code) per rejected value and
    ``placeholders`` one kind per filler value; absent fields (None) appear in
    neither.
    """

    keys: list[MatchKey] = field(default_factory=list)
    invalid: list[tuple[KeyKind, str]] = field(default_factory=list)
    placeholders: list[KeyKind] = field(default_factory=list)


def match_keys(record: PersonRecord) -> KeyExtraction:
    """Every match key `record` yields, plus counts of invalid and filler values.

    Ingest runs this once per dump row, so it calls the normalisers directly
    rather than through partials, and compares a key only with the keys of
    its own kind (keys of different kinds are never equal).
    """
    found = KeyExtraction()
    if record.cpr is not None:
        _add(found, KeyKind.CPR, normalise_cpr, record.cpr)
    if record.ssn is not None:
        _add(found, KeyKind.SSN, normalise_ssn, record.ssn)
    if record.mrn is not None:
        _add(found, KeyKind.MRN, _mrn_of(record.facility), record.mrn)
    _add_each(found, KeyKind.EMAIL, normalise_email, record.email, record.extra_emails)
    _add_each(found, KeyKind.PHONE, normalise_phone, record.phone, record.extra_phones)
    if (
        record.given_name is not None
        or record.family_name is not None
        or record.full_name is not None
        or record.birth_date is not None
    ):
        _add(found, KeyKind.NAME_DOB, _name_dob_of, record)
    return found


def _mrn_of(facility: str | None) -> Callable[[str], str]:
    return lambda raw: normalise_mrn(raw, facility=facility)


def _name_dob_of(record: PersonRecord) -> str:
    return normalise_name_dob(
        given_name=record.given_name,
        family_name=record.family_name,
        full_name=record.full_name,
        birth_date=record.birth_date,
    )


def _add_each(
    found: KeyExtraction,
    kind: KeyKind,
    normalise: Callable[[str], str],
    first: str | None,
    extras: list[str],
) -> None:
    """The field's value, then its extra values, each key once."""
    if first is not None:
        _add(found, kind, normalise, first)
    for raw in extras:
        _add(found, kind, normalise, raw, dedupe=True)


def _add(
    found: KeyExtraction,
    kind: KeyKind,
    normalise: Callable[[_Raw], str],
    raw: _Raw,
    *,
    dedupe: bool = False,
) -> None:
    """Run one normaliser and file its key, its reason code or its placeholder.

    With `dedupe` (a field's extra values), a key equal to one already found
    is not added again.
    """
    try:
        value = normalise(raw)
    except InvalidIdentifier as error:
        found.invalid.append((error.kind, error.reason))
        return
    except Placeholder as error:
        found.placeholders.append(error.kind)
        return
    key = MatchKey(kind, value)
    if not dedupe or key not in found.keys:
        found.keys.append(key)
