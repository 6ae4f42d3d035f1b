"""Who a certificate speaks for: one role and one name, read from its URI SAN.

Every party of breachmatch holds a certificate from the operator's one CA,
and what it may do depends on *what kind* of party it is. The kind is not a
second CA or a naming convention of the common name; it is written in the
certificate as one SPIFFE-style URI subject alternative name::

    spiffe://breachmatch/<role>/<name>

with role ``hospital`` (name = the tenant id), ``operator`` (a person or
machine of the operator calling the operator-only RPCs) or ``service``
(``matcher``, ``notifier``, ``ingest``: the services' own identities, used to
serve gRPC and as their NATS users). A certificate without exactly one URI
SAN, or whose one URI is not of that form, names nobody: callers treat it as
unauthenticated. The same URI is what nats-server maps to a NATS user
(``verify_and_map``), so gRPC and NATS agree on who is who.

Parsing is strict on purpose (scheme, trust domain, exactly two path segments,
a known role, a name of letters, digits, ``.``, ``_`` and ``-``): a lenient
parser is how one party ends up being read as another.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

from cryptography import x509

TRUST_DOMAIN = "breachmatch"
_SCHEME = "spiffe://"
#: A tenant or service name: one URI path segment, safe in subjects, paths and logs.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class Role(enum.StrEnum):
    HOSPITAL = "hospital"
    OPERATOR = "operator"
    SERVICE = "service"


class IdentityError(ValueError):
    """A certificate or URI that does not name exactly one breachmatch identity."""


@dataclass(frozen=True)
class Identity:
    role: Role
    name: str

    @property
    def uri(self) -> str:
        return spiffe_uri(self.role, self.name)

    def __str__(self) -> str:
        return f"{self.role}/{self.name}"


def spiffe_uri(role: Role, name: str) -> str:
    """The URI SAN a certificate for `name` in `role` carries."""
    if not NAME_PATTERN.fullmatch(name):
        raise IdentityError(f"not a valid identity name: {name!r}")
    return f"{_SCHEME}{TRUST_DOMAIN}/{Role(role)}/{name}"


def parse_spiffe_uri(uri: str) -> Identity:
    """The identity a URI SAN names; IdentityError unless it is exactly our form."""
    prefix = f"{_SCHEME}{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        raise IdentityError("URI SAN is not in the breachmatch trust domain")
    parts = uri[len(prefix) :].split("/")
    if len(parts) != 2:
        raise IdentityError("URI SAN must be spiffe://breachmatch/<role>/<name>")
    role, name = parts
    try:
        parsed_role = Role(role)
    except ValueError:
        raise IdentityError("URI SAN names an unknown role") from None
    if not NAME_PATTERN.fullmatch(name):
        raise IdentityError("URI SAN names an invalid identity")
    return Identity(parsed_role, name)


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """The identity of a certificate: its one URI SAN, parsed strictly."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subject alternative names") from None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"certificate must carry exactly one URI SAN, not {len(uris)}")
    return parse_spiffe_uri(uris[0])


@functools.lru_cache(maxsize=4096)
def identity_from_pem(pem: bytes) -> Identity:
    """The identity of a PEM certificate (cached: gRPC hands over the same PEM on every call)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise IdentityError("peer certificate is not PEM") from None
    return identity_from_certificate(cert)
