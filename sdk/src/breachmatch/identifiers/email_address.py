"""E-mail addresses.

Syntax is email-validator's (no DNS: ingest and hospitals must agree offline
and reproducibly). The key value is the local part case-folded and the domain
in IDNA ASCII form (UTS-46 mapped, so already lower-case): "Søren@Bücher.DK"
and "søren@xn--bcher-kva.dk" give one key. Case-folding the local part is
not RFC-exact, but no real mail provider hands out addresses that differ by
case only, while leaked dumps routinely change case.

email-validator costs ~25 µs an address, most of ingest's budget, so plain
ASCII addresses of the everyday shape take a fast path: a strict subset of
what the validator accepts, giving the same value (a test holds the two
paths equal). Anything outside the subset goes to the validator.
"""

from __future__ import annotations

import re
import unicodedata

from email_validator import (
    SPECIAL_USE_DOMAIN_NAMES,
    EmailNotValidError,
    ValidatedEmail,
    validate_email,
)

from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.placeholders import (
    PLACEHOLDER_WORDS,
    is_placeholder_text,
    is_repeated_filler,
)

#: Local parts that say "this person gave no address".
_FILLER_LOCAL_PARTS: frozenset[str] = PLACEHOLDER_WORDS | {
    "noemail",
    "no-email",
    "no.email",
    "no_email",
    "nomail",
    "no-mail",
    "no.mail",
    "noreply",
    "no-reply",
    "ingenmail",
    "ingen.mail",
    "ingen-mail",
    "fake",
    "invalid",
}

# Local part: dot-separated runs of letters, digits, "_", "+", "-". Domain: at
# least two LDH labels (no "--" at all, which also keeps Punycode out), an
# alphabetic top-level label. Lengths are checked separately.
_EVERYDAY_ASCII = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63})"
)
_LOCAL_MAX, _ADDRESS_MAX = 64, 254
_SPECIAL_USE_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def normalise_email(raw: str) -> str:
    """The e-mail key value; raises `InvalidIdentifier` or `Placeholder`."""
    address = raw.strip()
    folded = address.casefold()
    # An everyday address has an "@" and letters, which no filler text has.
    everyday = _is_everyday_ascii(address, folded)
    if not everyday and is_placeholder_text(raw):
        raise Placeholder(KeyKind.EMAIL)
    local, at, _ = folded.rpartition("@")
    if at and (local in _FILLER_LOCAL_PARTS or _is_single_letter_filler(folded)):
        raise Placeholder(KeyKind.EMAIL)
    if everyday:
        return folded
    validated = _validated(address)
    if validated is None:
        raise InvalidIdentifier(KeyKind.EMAIL, Reason.EMAIL_SYNTAX)
    local_part = unicodedata.normalize("NFC", validated.local_part.casefold())
    return f"{local_part}@{validated.ascii_domain}"


def _is_everyday_ascii(address: str, folded: str) -> bool:
    """True when `address` is in the fast path's subset (the validator would accept it).

    `folded` is `address` case-folded: for ASCII that is lower-casing, so the
    pattern matches it without IGNORECASE, which is slower.
    """
    # isascii of the address itself: the Kelvin sign case-folds to an ASCII "k".
    if not address.isascii() or len(address) > _ADDRESS_MAX or "--" in address:
        return False
    match = _EVERYDAY_ASCII.fullmatch(folded)
    return (
        match is not None and folded.index("@") <= _LOCAL_MAX and match[1] not in _SPECIAL_USE_TLDS
    )


def _is_single_letter_filler(folded: str) -> bool:
    """x@x.x, a@aa.aa: one character repeated around the "@" and dots."""
    first, last = folded[0], folded[-1]
    if first != last and first not in "@." and last not in "@.":
        return False  # two different characters outside "@" and dots (most addresses)
    return is_repeated_filler(folded.replace("@", "").replace(".", ""))


def _validated(address: str) -> ValidatedEmail | None:
    try:
        return validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
