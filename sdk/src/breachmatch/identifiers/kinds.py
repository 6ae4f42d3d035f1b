"""What a match key is: its kind, its strength and the bytes fed to the OPRF.

Keeping the domain separation in one place is what guarantees that a CPR
number and a phone number with the same digits can never produce the same
token, and that ingest and the SDK build byte-identical OPRF inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class KeyKind(StrEnum):
    """The kinds of match key. The value is part of every OPRF input: never rename one."""

    CPR = "cpr"
    SSN = "ssn"
    MRN = "mrn"
    EMAIL = "email"
    PHONE = "phone"
    NAME_DOB = "name_dob"

    @property
    def strength(self) -> Strength:
        return _STRENGTH[self]


class Strength(StrEnum):
    """How much a match on a key kind says about identity.

    Strong keys identify one person on their own; a medium key may be shared
    (a family e-mail, a household phone, two people with the same name and
    birthday), so a hospital shows medium-only matches for review.
    """

    STRONG = "strong"
    MEDIUM = "medium"


#: Every OPRF input starts with this; the version lets a future change of
#: normalisation live next to the old one without ever colliding with it.
DOMAIN_PREFIX = b"breachmatch:v1:"

_STRENGTH: dict[KeyKind, Strength] = {
    KeyKind.CPR: Strength.STRONG,
    KeyKind.SSN: Strength.STRONG,
    KeyKind.MRN: Strength.STRONG,
    KeyKind.EMAIL: Strength.MEDIUM,
    KeyKind.PHONE: Strength.MEDIUM,
    KeyKind.NAME_DOB: Strength.MEDIUM,
}

# Kind names never contain ":", so "prefix + kind + ':'" ends exactly where the
# value starts and no (kind, value) pair can produce another pair's bytes.
_INPUT_PREFIX: dict[KeyKind, bytes] = {
    kind: DOMAIN_PREFIX + kind.value.encode("ascii") + b":" for kind in KeyKind
}


@dataclass(frozen=True, slots=True)
class MatchKey:
    """One normalised identifier of one kind.

    The value is left out of ``repr`` so a key that reaches a log line or a
    traceback by accident shows its kind only.
    """

    kind: KeyKind
    value: str = field(repr=False)

    @property
    def strength(self) -> Strength:
        return self.kind.strength

    def oprf_input(self) -> bytes:
        """The domain-separated bytes to blind (SDK) or evaluate (ingest)."""
        return _INPUT_PREFIX[self.kind] + self.value.encode("utf-8")
