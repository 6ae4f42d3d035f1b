"""Identifier normalisation and match keys — the code ingest and the SDK share.

Both sides must turn the same person into byte-identical OPRF inputs or
nothing ever matches, so every rule lives here once: one module per key kind
(`cpr`, `ssn`, `mrn`, `email_address`, `phone`, `name_dob` with `names` and
`birth_date`), fillers in `placeholders`, the key type and its domain
separation in `kinds`, and `match_keys` (in `extract`) to take a whole
`PersonRecord` at a time.

Normalisers return the key value or raise `InvalidIdentifier` (with a stable
reason code) or `Placeholder`; neither ever carries the raw value.
"""

from breachmatch.identifiers.birth_date import normalise_birth_date
from breachmatch.identifiers.cpr import normalise_cpr
from breachmatch.identifiers.email_address import normalise_email
from breachmatch.identifiers.errors import IdentifierError, InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.extract import KeyExtraction, match_keys
from breachmatch.identifiers.kinds import DOMAIN_PREFIX, KeyKind, MatchKey, Strength
from breachmatch.identifiers.mrn import normalise_mrn
from breachmatch.identifiers.name_dob import normalise_name_dob
from breachmatch.identifiers.phone import normalise_phone
from breachmatch.identifiers.ssn import normalise_ssn

__all__ = [
    "DOMAIN_PREFIX",
    "IdentifierError",
    "InvalidIdentifier",
    "KeyExtraction",
    "KeyKind",
    "MatchKey",
    "Placeholder",
    "Reason",
    "Strength",
    "match_keys",
    "normalise_birth_date",
    "normalise_cpr",
    "normalise_email",
    "normalise_mrn",
    "normalise_name_dob",
    "normalise_phone",
    "normalise_ssn",
]
