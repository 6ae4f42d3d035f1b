"""A throw-away PKI for mTLS in tests and `make demo`.

Hospitals authenticate with client certificates and the tenant id *is* the
certificate's common name (docs/architecture.md, promise 6), so every test of that promise
needs a CA, a server certificate, tenant certificates, and the two certificates
that must be refused: one expired, one issued by a CA the operator never trusted.

Files follow the Kubernetes TLS-secret convention (``ca.crt``, ``tls.crt``,
``tls.key``) so the very same directories can be mounted into pods. In every
leaf directory ``ca.crt`` is the *dev* CA: it is what that party uses to verify
its peer. That holds for ``foreign/`` too — the foreign client trusts the real
server, only its own certificate comes from elsewhere, which is the attack the
server has to refuse.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EXPIRED_TENANT = "expired"
"""Tenant id of the client certificate whose validity ended yesterday."""

FOREIGN_TENANT = "hospital-a"
"""Common name the foreign-CA certificate claims: a real tenant's, to show it is not enough."""

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_KEY_FILE = "ca.key"

CA_COMMON_NAME = "breachmatch dev CA"

LEAF_LIFETIME = dt.timedelta(days=30)
CA_LIFETIME = dt.timedelta(days=90)
# Regenerate rather than reuse when a certificate has less than this left, so a
# demo started today does not fail halfway through tomorrow.
REUSE_MARGIN = dt.timedelta(days=1)
# Backdate notBefore a little: peers with a slightly slow clock must accept it.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class DevPki:
    """Where the files of one dev PKI live; see the module docstring for the layout."""

    root: Path
    tenants: tuple[str, ...]
    server_names: tuple[str, ...]

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / CA_FILE

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    def tenant_dir(self, tenant: str) -> Path:
        """Directory of a tenant's client certificate; only issued tenants are known."""
        if tenant not in (*self.tenants, EXPIRED_TENANT):
            raise KeyError(f"tenant is not part of this dev PKI: {tenant!r}")
        return self.root / "tenants" / tenant

    @property
    def expired_dir(self) -> Path:
        return self.tenant_dir(EXPIRED_TENANT)

    @property
    def foreign_dir(self) -> Path:
        return self.root / "foreign"


def make_dev_pki(
    directory: Path,
    tenants: Sequence[str] = ("hospital-a", "hospital-b"),
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
) -> DevPki:
    """Create the dev PKI under `directory`, or reuse the one already there.

    Reuse matters because `make demo` re-runs against the same `.var/` and
    services that are still running keep the files they loaded; a PKI is reused
    only if every file is present, chains as it should, names the requested
    tenants and server names, and stays valid for at least `REUSE_MARGIN`.
    """
    if not tenants or not server_names:
        raise ValueError("a dev PKI needs at least one tenant and one server name")
    if EXPIRED_TENANT in tenants:
        raise ValueError(f"tenant id {EXPIRED_TENANT!r} is reserved for the expired certificate")
    pki = DevPki(Path(directory), tuple(tenants), tuple(server_names))
    now = dt.datetime.now(dt.UTC)
    if not _is_reusable(pki, now):
        _generate(pki, now)
    return pki


@dataclass(frozen=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _generate(pki: DevPki, now: dt.datetime) -> None:
    ca = _make_ca(now)
    _write_secret(pki.ca_dir / CA_KEY_FILE, _key_pem(ca.key))
    _write_public(pki.ca_dir / CA_FILE, _cert_pem(ca.cert))

    san = [_general_name(name) for name in pki.server_names]
    valid = (now - CLOCK_SKEW, now + LEAF_LIFETIME)
    _issue_into(
        pki.server_dir, ca, ca, pki.server_names[0], valid, ExtendedKeyUsageOID.SERVER_AUTH, san
    )
    for tenant in pki.tenants:
        _issue_into(pki.tenant_dir(tenant), ca, ca, tenant, valid, ExtendedKeyUsageOID.CLIENT_AUTH)
    expired = (now - LEAF_LIFETIME, now - dt.timedelta(days=1))
    _issue_into(pki.expired_dir, ca, ca, EXPIRED_TENANT, expired, ExtendedKeyUsageOID.CLIENT_AUTH)
    foreign_ca = _make_ca(now)  # same subject as the dev CA: only the signature tells them apart
    _issue_into(
        pki.foreign_dir, ca, foreign_ca, FOREIGN_TENANT, valid, ExtendedKeyUsageOID.CLIENT_AUTH
    )


def _make_ca(now: dt.datetime) -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(CA_COMMON_NAME)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(cert, key)


def _issue_into(
    directory: Path,
    trust_anchor: _Issuer,
    issuer: _Issuer,
    common_name: str,
    validity: tuple[dt.datetime, dt.datetime],
    usage: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] = (),
) -> None:
    """Issue a leaf certificate from `issuer` and write the secret directory for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    _write_public(directory / CA_FILE, _cert_pem(trust_anchor.cert))
    _write_public(directory / CERT_FILE, _cert_pem(cert))
    _write_secret(directory / KEY_FILE, _key_pem(key))


def _is_reusable(pki: DevPki, now: dt.datetime) -> bool:
    """True when the files on disk are a complete, still-valid PKI with the requested names."""
    try:
        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key((pki.ca_dir / CA_KEY_FILE).read_bytes(), None)
        if ca_key.public_key() != ca.public_key() or not _valid_for_margin(ca, now):
            return False
        server = _load_leaf(pki.server_dir, ca)
        if _common_name(server) != pki.server_names[0] or not _valid_for_margin(server, now):
            return False
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if list(names) != [_general_name(name) for name in pki.server_names]:
            return False
        for tenant in pki.tenants:
            cert = _load_leaf(pki.tenant_dir(tenant), ca)
            if _common_name(cert) != tenant or not _valid_for_margin(cert, now):
                return False
        if _load_leaf(pki.expired_dir, ca).not_valid_after_utc >= now:
            return False
        _load_leaf(pki.foreign_dir, ca, issued_by_ca=False)
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return True


def _load_leaf(
    directory: Path, ca: x509.Certificate, *, issued_by_ca: bool = True
) -> x509.Certificate:
    """Load a leaf directory, raising ValueError when it is not what the layout promises."""
    if x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes()) != ca:
        raise ValueError(f"{directory / CA_FILE} is not the dev CA")
    cert = x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes())
    key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), None)
    if key.public_key() != cert.public_key():
        raise ValueError(f"{directory / KEY_FILE} does not belong to {directory / CERT_FILE}")
    if _is_issued_by(cert, ca) != issued_by_ca:
        relation = "must" if issued_by_ca else "must not"
        raise ValueError(f"{directory / CERT_FILE} {relation} be issued by the dev CA")
    return cert


def _is_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _valid_for_margin(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and now + REUSE_MARGIN < cert.not_valid_after_utc


def _common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "breachmatch dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_secret(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, also when the file already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
