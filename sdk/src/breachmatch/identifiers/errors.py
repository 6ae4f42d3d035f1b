"""Why a raw value gave no match key.

Both exceptions carry the key kind and, for invalid values, a short stable
reason code — never the value itself — so they can be logged, counted and
shown in an ingest report without leaking an identifier. Normalisers raise
them outside ``except`` blocks, so no chained exception from a third-party
validator (whose messages may quote the input) rides along.
"""

from __future__ import annotations

from enum import StrEnum

from breachmatch.identifiers.kinds import KeyKind


class Reason(StrEnum):
    """Reason codes for invalid values; ingest reports count them by name."""

    CPR_FORMAT = "cpr_format"
    CPR_BAD_DATE = "cpr_bad_date"
    SSN_FORMAT = "ssn_format"
    SSN_AREA = "ssn_area"
    SSN_GROUP = "ssn_group"
    SSN_SERIAL = "ssn_serial"
    MRN_TOO_LONG = "mrn_too_long"
    MRN_NO_FACILITY = "mrn_no_facility"
    EMAIL_SYNTAX = "email_syntax"
    PHONE_SYNTAX = "phone_syntax"
    PHONE_LENGTH = "phone_length"
    NAME_MISSING = "name_missing"
    NAME_INCOMPLETE = "name_incomplete"
    DOB_MISSING = "dob_missing"
    DOB_FORMAT = "dob_format"
    DOB_BAD_DATE = "dob_bad_date"
    DOB_RANGE = "dob_range"


class IdentifierError(ValueError):
    """A raw value that yields no key of ``kind``."""

    def __init__(self, kind: KeyKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class InvalidIdentifier(IdentifierError):
    """The value is present but malformed (wrong length, impossible date, ...)."""

    def __init__(self, kind: KeyKind, reason: Reason) -> None:
        super().__init__(kind, f"invalid {kind.value}: {reason.value}")
        self.reason = reason


class Placeholder(IdentifierError):
    """The value stands for "no value" ("unknown", 0000000000, x@x.x, ...).

    Counted apart from invalid values: a placeholder must never become a key,
    because it would match every other row carrying the same placeholder.
    """

    def __init__(self, kind: KeyKind) -> None:
        super().__init__(kind, f"placeholder {kind.value}")
