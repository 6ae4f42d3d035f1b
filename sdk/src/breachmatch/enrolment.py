"""Joining as a hospital: a key and request made at the hospital, signed by the operator.

Three steps, and the private key never leaves the hospital:

1. the hospital runs ``breachmatch certificate request --tenant ID`` (`write_request`):
   a fresh P-256 key (``tls.key``, owner-only) and a certificate signing
   request (``request.csr``) naming ``spiffe://breachmatch/hospital/ID``;
2. the operator runs ``breachmatch-matcher tenants sign request.csr``
   (`sign_request` + `Bundle`): the request is checked (its own signature, a
   hospital URI and nothing else — a request cannot ask for the operator or a
   service role), a client certificate is issued from the operator's CA, the
   tenant is added to the tenants file, and one bundle file goes back: the
   certificate, the CA and the operator's manifest verify key;
3. the hospital runs ``breachmatch certificate install BUNDLE`` (`install_bundle`):
   the bundle is checked against the key it holds (the certificate is for
   *its* key, names *its* tenant, chains to the bundled CA), and the files land
   next to the key. Both sides print the bundle's fingerprint — a SHA-256 over
   the CA certificate and the operator key, the two things the hospital will
   trust from now on — to compare out of band (a phone call), so a bundle
   swapped in transit is caught.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from breachmatch.certificates import CA_KEY_FILE, issue_leaf, key_pem, write_secret
from breachmatch.identity import (
    Identity,
    IdentityError,
    Role,
    identity_from_certificate,
    parse_spiffe_uri,
    spiffe_uri,
)
from breachmatch.tls import CA_FILE, CERT_FILE, KEY_FILE

REQUEST_FILE = "request.csr"
OPERATOR_KEY_FILE = "operator.pub"
BUNDLE_VERSION = 1
DEFAULT_VALIDITY = dt.timedelta(days=365)
CLOCK_SKEW = dt.timedelta(minutes=5)


class EnrolmentError(ValueError):
    """A request, bundle or CA that must not be used; the message says what is wrong."""


# --- 1. the hospital's request --------------------------------------------------------


def write_request(tenant: str, directory: Path) -> Path:
    """Make this hospital's key (``tls.key``, 0600) and a CSR for `tenant`; the CSR's path.

    Refuses to overwrite an existing key: it may be the one a certificate was
    already issued for.
    """
    uri = _hospital_uri(tenant)
    key_path = directory / KEY_FILE
    if key_path.exists():
        raise EnrolmentError(f"{key_path} exists; refusing to replace a private key")
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(tenant))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_secret(key_path, key_pem(key))
    request_path = directory / REQUEST_FILE
    request_path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return request_path


# --- 2. the operator signs --------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """``ca.crt`` and ``ca.key`` of `directory` (the dev PKI's ``ca/`` layout)."""
        try:
            cert = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
            key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
        except (OSError, ValueError) as error:
            raise EnrolmentError(
                f"{directory} does not hold a PEM CA certificate and key (ca.crt, ca.key)"
            ) from error
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise EnrolmentError(f"{directory}: ca.key is not the EC key of ca.crt")
        return cls(cert, key)


def requested_tenant(request_pem: bytes) -> str:
    """The tenant a CSR asks for, after checking it asks for exactly that and nothing more."""
    try:
        request = x509.load_pem_x509_csr(request_pem)
    except ValueError:
        raise EnrolmentError("not a PEM certificate signing request") from None
    if not request.is_signature_valid:
        raise EnrolmentError("the request's signature does not verify")
    try:
        names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise EnrolmentError(
            "the request names no identity (no subject alternative name)"
        ) from None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or len(list(names)) != 1:
        raise EnrolmentError("the request must name exactly one URI and nothing else")
    try:
        identity = parse_spiffe_uri(uris[0])
    except IdentityError as error:
        raise EnrolmentError(f"the request's URI is not a breachmatch identity: {error}") from None
    if identity.role is not Role.HOSPITAL:
        raise EnrolmentError(f"a request may ask for a hospital identity only, not {identity}")
    common_names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [str(attribute.value) for attribute in common_names] != [identity.name]:
        raise EnrolmentError("the request's common name must be its tenant id")
    return identity.name


def sign_request(
    request_pem: bytes,
    ca: CertificateAuthority,
    *,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Issue the hospital client certificate a checked CSR asks for."""
    tenant = requested_tenant(request_pem)
    public_key = x509.load_pem_x509_csr(request_pem).public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise EnrolmentError("the request's key must be an EC key (as `certificate request` makes)")
    moment = now or dt.datetime.now(dt.UTC)
    return issue_leaf(
        public_key,
        _subject(tenant),
        [x509.UniformResourceIdentifier(spiffe_uri(Role.HOSPITAL, tenant))],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        (moment - CLOCK_SKEW, min(moment + validity, ca.cert.not_valid_after_utc)),
        ca.cert,
        ca.key,
    )


# --- the bundle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """What the operator sends back: the certificate, the CA, the operator verify key."""

    tenant: str
    certificate_pem: bytes
    ca_pem: bytes
    operator_verify_key: bytes

    def fingerprint(self) -> str:
        """SHA-256 over what the hospital will trust (CA and operator key), grouped for reading."""
        ca = x509.load_pem_x509_certificate(self.ca_pem).public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(b"breachmatch bundle v1\0" + ca + self.operator_verify_key)
        text = digest.hexdigest()[:32].upper()
        return " ".join(text[i : i + 4] for i in range(0, len(text), 4))

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": BUNDLE_VERSION,
                "tenant": self.tenant,
                "certificate": self.certificate_pem.decode(),
                "ca": self.ca_pem.decode(),
                "operator_verify_key": self.operator_verify_key.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Bundle:
        try:
            data: Any = json.loads(text)
            version = data["version"]
            bundle = cls(
                tenant=str(data["tenant"]),
                certificate_pem=str(data["certificate"]).encode(),
                ca_pem=str(data["ca"]).encode(),
                operator_verify_key=bytes.fromhex(str(data["operator_verify_key"])),
            )
            nacl.signing.VerifyKey(bundle.operator_verify_key)
        except (ValueError, KeyError, TypeError, nacl.exceptions.CryptoError):
            raise EnrolmentError("not a breachmatch enrolment bundle") from None
        if version != BUNDLE_VERSION:
            raise EnrolmentError(f"unknown bundle version {version!r}")
        return bundle


# --- 3. the hospital installs -------------------------------------------------------------


def install_bundle(bundle: Bundle, directory: Path, now: dt.datetime | None = None) -> Identity:
    """Check `bundle` against the key in `directory`, then write ca.crt, tls.crt, operator.pub."""
    try:
        cert = x509.load_pem_x509_certificate(bundle.certificate_pem)
        ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    except ValueError:
        raise EnrolmentError("the bundle's certificates are not PEM") from None
    key_path = directory / KEY_FILE
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError) as error:
        raise EnrolmentError(
            f"{key_path}: no private key here; install into the directory of the request"
        ) from error
    if key.public_key() != cert.public_key():
        raise EnrolmentError(f"the bundle's certificate is not for the key in {key_path}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrolmentError("the bundle's certificate is not issued by the bundled CA") from None
    try:
        identity = identity_from_certificate(cert)
    except IdentityError as error:
        raise EnrolmentError(f"the bundle's certificate names no identity: {error}") from None
    if identity != Identity(Role.HOSPITAL, bundle.tenant):
        raise EnrolmentError(f"the bundle's certificate is for {identity}, not this tenant")
    moment = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= moment < cert.not_valid_after_utc:
        raise EnrolmentError("the bundle's certificate is not valid now")
    (directory / CA_FILE).write_bytes(bundle.ca_pem)
    (directory / CERT_FILE).write_bytes(bundle.certificate_pem)
    (directory / OPERATOR_KEY_FILE).write_text(bundle.operator_verify_key.hex() + "\n")
    return identity


def _subject(tenant: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, tenant)])


def _hospital_uri(tenant: str) -> str:
    try:
        return spiffe_uri(Role.HOSPITAL, tenant)
    except IdentityError as error:
        raise EnrolmentError(str(error)) from None
