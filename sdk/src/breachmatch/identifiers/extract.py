"""All match keys of one person record, with counts of what gave none.

This is the one entry point ingest and the SDK share. It never raises for a
bad value: a dump row with a broken phone still yields its CPR key, and the
reason codes and placeholder kinds it returns feed ingest's data-quality
report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from breachmatch.identifiers.cpr import normalise_cpr
from breachmatch.identifiers.email_address import normalise_email
from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder
from breachmatch.identifiers.kinds import KeyKind, MatchKey
from breachmatch.identifiers.mrn import normalise_mrn
from breachmatch.identifiers.name_dob import normalise_name_dob
from breachmatch.identifiers.phone import normalise_phone
from breachmatch.identifiers.ssn import normalise_ssn
from breachmatch.records import PersonRecord


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
    """Every match key `record` yields, plus counts of invalid and filler values."""
    found = KeyExtraction()
    _add_each(found, KeyKind.CPR, normalise_cpr, [record.cpr])
    _add_each(found, KeyKind.SSN, normalise_ssn, [record.ssn])
    _add_each(found, KeyKind.MRN, partial(normalise_mrn, facility=record.facility), [record.mrn])
    _add_each(found, KeyKind.EMAIL, normalise_email, [record.email, *record.extra_emails])
    _add_each(found, KeyKind.PHONE, normalise_phone, [record.phone, *record.extra_phones])
    name_fields = (record.given_name, record.family_name, record.full_name, record.birth_date)
    if any(raw is not None for raw in name_fields):
        name_dob = partial(
            normalise_name_dob,
            given_name=record.given_name,
            family_name=record.family_name,
            full_name=record.full_name,
            birth_date=record.birth_date,
        )
        _add(found, KeyKind.NAME_DOB, name_dob)
    return found


def _add_each(
    found: KeyExtraction,
    kind: KeyKind,
    normalise: Callable[[str], str],
    raws: Iterable[str | None],
) -> None:
    for raw in raws:
        if raw is not None:
            _add(found, kind, partial(normalise, raw))


def _add(found: KeyExtraction, kind: KeyKind, normalise: Callable[[], str]) -> None:
    """Run one normaliser and file its key, its reason code or its placeholder."""
    try:
        key = MatchKey(kind, normalise())
    except InvalidIdentifier as error:
        found.invalid.append((error.kind, error.reason))
        return
    except Placeholder as error:
        found.placeholders.append(error.kind)
        return
    if key not in found.keys:
        found.keys.append(key)
