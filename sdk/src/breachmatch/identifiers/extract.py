"""All match keys of one person record, with counts of what gave none.

This is the one entry point ingest and the SDK share. It never raises for a
bad value: a dump row with a broken phone still yields its CPR key, and the
reason codes and placeholder kinds it returns feed ingest's data-quality
report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from breachmatch.identifiers.cpr import normalise_cpr
from breachmatch.identifiers.email_address import normalise_email
from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder
from breachmatch.identifiers.kinds import KeyKind, MatchKey
from breachmatch.identifiers.mrn import normalise_mrn
from breachmatch.identifiers.name_dob import normalise_name_dob
from breachmatch.identifiers.phone import normalise_phone
from breachmatch.identifiers.ssn import normalise_ssn
from breachmatch.records import PersonRecord

# An enum member read from its class costs more than a global; this runs per value.
_CPR, _SSN, _MRN = KeyKind.CPR, KeyKind.SSN, KeyKind.MRN
_EMAIL, _PHONE, _NAME_DOB = KeyKind.EMAIL, KeyKind.PHONE, KeyKind.NAME_DOB


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

    Ingest runs this once per dump row and the SDK once per patient, so the
    normalisers are called inline here (no helper call, closure or partial
    per value), and a key is compared only when it could repeat: a field's
    extra values against the keys found so far.
    """
    found = KeyExtraction()
    keys = found.keys
    if record.cpr is not None:
        try:
            keys.append(MatchKey(_CPR, normalise_cpr(record.cpr)))
        except (InvalidIdentifier, Placeholder) as error:
            _file(found, error)
    if record.ssn is not None:
        try:
            keys.append(MatchKey(_SSN, normalise_ssn(record.ssn)))
        except (InvalidIdentifier, Placeholder) as error:
            _file(found, error)
    if record.mrn is not None:
        try:
            keys.append(MatchKey(_MRN, normalise_mrn(record.mrn, record.facility)))
        except (InvalidIdentifier, Placeholder) as error:
            _file(found, error)
    for kind, normalise, first, extras in (
        (_EMAIL, normalise_email, record.email, record.extra_emails),
        (_PHONE, normalise_phone, record.phone, record.extra_phones),
    ):
        if first is not None:
            try:
                keys.append(MatchKey(kind, normalise(first)))
            except (InvalidIdentifier, Placeholder) as error:
                _file(found, error)
        for raw in extras:
            try:
                key = MatchKey(kind, normalise(raw))
            except (InvalidIdentifier, Placeholder) as error:
                _file(found, error)
                continue
            if key not in keys:
                keys.append(key)
    if (
        record.given_name is not None
        or record.family_name is not None
        or record.full_name is not None
        or record.birth_date is not None
    ):
        try:
            value = normalise_name_dob(
                given_name=record.given_name,
                family_name=record.family_name,
                full_name=record.full_name,
                birth_date=record.birth_date,
            )
            keys.append(MatchKey(_NAME_DOB, value))
        except (InvalidIdentifier, Placeholder) as error:
            _file(found, error)
    return found


def _file(found: KeyExtraction, error: InvalidIdentifier | Placeholder) -> None:
    """A value that gave no key: its reason code, or its kind as a filler."""
    if isinstance(error, InvalidIdentifier):
        found.invalid.append((error.kind, error.reason))
    else:
        found.placeholders.append(error.kind)
