"""A throw-away PKI for mTLS in tests and `make demo`.

Every party holds a certificate from one CA, and its role is the URI SAN
``spiffe://breachmatch/<role>/<name>`` (`breachmatch.identity`). So every
test of who may do what needs a CA and one certificate per kind of party:

* ``tenants/<tenant>/`` — hospitals (URI ``hospital/<tenant>``, clientAuth);
* ``operator/`` — the operator's tools (URI ``operator/operator``, clientAuth);
* ``services/<service>/`` — matcher, notifier, ingest, the JetStream backup
  job and the NATS server itself (URI ``service/<service>``, DNS/IP SANs for the server names,
  serverAuth + clientAuth): each service serves gRPC with it and presents it
  as its NATS client identity. ``services/admin/`` is a dev-only identity
  with every NATS permission, for tests that inspect or seed streams;
  production issues no such certificate and its nats.conf has no such user;

plus the certificates that must be refused: ``tenants/expired/`` (validity
ended yesterday), ``foreign/`` (claims hospital-a, issued by a CA the operator
never trusted) and ``nameless/`` (from the right CA, but with no URI SAN, so
it names nobody).

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
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from breachmatch.certificates import CA_KEY_FILE, cert_pem, issue_leaf, key_pem, write_secret
from breachmatch.identity import Role, spiffe_uri

EXPIRED_TENANT = "expired"
"""Tenant id of the client certificate whose validity ended yesterday."""

FOREIGN_TENANT = "hospital-a"
"""Tenant the foreign-CA certificate claims: a real tenant's, to show it is not enough."""

SERVICES = ("matcher", "notifier", "ingest", "nats", "backup", "admin")
"""Service identities: the three services, the NATS server, the JetStream backup job,
and the dev-only admin."""

OPERATOR = "operator"
"""Name of the dev operator identity (``spiffe://breachmatch/operator/operator``)."""

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

CA_COMMON_NAME = "breachmatch dev CA"

LEAF_LIFETIME = dt.timedelta(days=30)
CA_LIFETIME = dt.timedelta(days=90)
# Regenerate rather than reuse when a certificate has less than this left, so a
# demo started today does not fail halfway through tomorrow.
REUSE_MARGIN = dt.timedelta(days=1)
# Backdate notBefore a little: peers with a slightly slow clock must accept it.
CLOCK_SKEW = dt.timedelta(minutes=5)

_CLIENT = (ExtendedKeyUsageOID.CLIENT_AUTH,)
_SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


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

    def service_dir(self, service: str) -> Path:
        """Directory of a service's certificate (gRPC server and NATS client identity)."""
        if service not in SERVICES:
            raise KeyError(f"service is not part of this dev PKI: {service!r}")
        return self.root / "services" / service

    @property
    def operator_dir(self) -> Path:
        return self.root / "operator"

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

    @property
    def nameless_dir(self) -> Path:
        return self.root / "nameless"


@dataclass(frozen=True)
class _Leaf:
    """One leaf certificate of the layout: what it must say, and who must have signed it."""

    directory: Path
    common_name: str
    uri: str | None
    dns_or_ip: tuple[str, ...]
    usages: tuple[x509.ObjectIdentifier, ...]
    expired: bool = False
    foreign: bool = False

    def san(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = []
        if self.uri is not None:
            names.append(x509.UniformResourceIdentifier(self.uri))
        return names + [_general_name(name) for name in self.dns_or_ip]


def _leaves(pki: DevPki) -> list[_Leaf]:
    servers = pki.server_names
    hospitals = [
        _Leaf(pki.tenant_dir(t), t, spiffe_uri(Role.HOSPITAL, t), (), _CLIENT) for t in pki.tenants
    ]
    services = [
        _Leaf(pki.service_dir(s), s, spiffe_uri(Role.SERVICE, s), servers, _SERVER_AND_CLIENT)
        for s in SERVICES
    ]
    expired_uri = spiffe_uri(Role.HOSPITAL, EXPIRED_TENANT)
    foreign_uri = spiffe_uri(Role.HOSPITAL, FOREIGN_TENANT)
    return [
        *hospitals,
        *services,
        _Leaf(pki.operator_dir, OPERATOR, spiffe_uri(Role.OPERATOR, OPERATOR), (), _CLIENT),
        _Leaf(pki.expired_dir, EXPIRED_TENANT, expired_uri, (), _CLIENT, expired=True),
        _Leaf(pki.foreign_dir, FOREIGN_TENANT, foreign_uri, (), _CLIENT, foreign=True),
        _Leaf(pki.nameless_dir, "nameless", None, (), _CLIENT),
    ]


def make_dev_pki(
    directory: Path,
    tenants: Sequence[str] = ("hospital-a", "hospital-b"),
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
    *,
    ca: DevPki | None = None,
) -> DevPki:
    """Create the dev PKI under `directory`, or reuse the one already there.

    With `ca`, the new PKI's certificates are issued by that PKI's CA, so its
    parties and those of `ca` trust each other (tests use this to give a suite
    its own tenants while sharing one nats-server, which trusts one CA).

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
    if ca is not None and ca.root != pki.root:
        _adopt_ca(pki, ca)
    now = dt.datetime.now(dt.UTC)
    if not _is_reusable(pki, now):
        _generate(pki, now, keep_ca=ca is not None)
    return pki


@dataclass(frozen=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _adopt_ca(pki: DevPki, ca: DevPki) -> None:
    """Use `ca`'s CA for `pki` (files copied, so the PKI stays one self-contained directory)."""
    for name in (CA_FILE, CA_KEY_FILE):
        source, target = ca.ca_dir / name, pki.ca_dir / name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o600 if name == CA_KEY_FILE else 0o644)


def _load_ca(pki: DevPki) -> _Issuer:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key((pki.ca_dir / CA_KEY_FILE).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the dev CA key must be an EC key")
    return _Issuer(cert, key)


def _generate(pki: DevPki, now: dt.datetime, *, keep_ca: bool) -> None:
    if keep_ca:
        ca = _load_ca(pki)
    else:
        ca = _make_ca(now)
        write_secret(pki.ca_dir / CA_KEY_FILE, key_pem(ca.key))
        _write_public(pki.ca_dir / CA_FILE, cert_pem(ca.cert))
    valid = (now - CLOCK_SKEW, now + LEAF_LIFETIME)
    expired = (now - LEAF_LIFETIME, now - dt.timedelta(days=1))
    foreign_ca = _make_ca(now)  # same subject as the dev CA: only the signature tells them apart
    for leaf in _leaves(pki):
        issuer = foreign_ca if leaf.foreign else ca
        _issue_into(leaf, ca, issuer, expired if leaf.expired else valid)


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
    leaf: _Leaf,
    trust_anchor: _Issuer,
    issuer: _Issuer,
    validity: tuple[dt.datetime, dt.datetime],
) -> None:
    """Issue `leaf` from `issuer` and write the secret directory for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(leaf.common_name)
    cert = issue_leaf(
        key.public_key(), name, leaf.san(), leaf.usages, validity, issuer.cert, issuer.key
    )
    _write_public(leaf.directory / CA_FILE, cert_pem(trust_anchor.cert))
    _write_public(leaf.directory / CERT_FILE, cert_pem(cert))
    write_secret(leaf.directory / KEY_FILE, key_pem(key))


def _is_reusable(pki: DevPki, now: dt.datetime) -> bool:
    """True when the files on disk are a complete, still-valid PKI with the requested names."""
    try:
        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key((pki.ca_dir / CA_KEY_FILE).read_bytes(), None)
        if ca_key.public_key() != ca.public_key() or not _valid_for_margin(ca, now):
            return False
        for leaf in _leaves(pki):
            cert = _load_leaf(leaf.directory, ca, issued_by_ca=not leaf.foreign)
            if _common_name(cert) != leaf.common_name or _san(cert) != leaf.san():
                return False
            if leaf.expired:
                if cert.not_valid_after_utc >= now:
                    return False
            elif not _valid_for_margin(cert, now):
                return False
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def _san(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


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


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
