"""A certificate names exactly one party, by one strict URI SAN, or nobody."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from breachmatch.identity import (
    Identity,
    IdentityError,
    Role,
    identity_from_certificate,
    identity_from_pem,
    parse_spiffe_uri,
    spiffe_uri,
)
from breachmatch_dev import DevPki


def _cert(*sans: x509.GeneralName, common_name: str = "hospital-a") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_uri_round_trips_for_every_role() -> None:
    for role in Role:
        uri = spiffe_uri(role, "hospital-a.dk")
        assert uri == f"spiffe://breachmatch/{role}/hospital-a.dk"
        assert parse_spiffe_uri(uri) == Identity(role, "hospital-a.dk")


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://other/hospital/hospital-a",
        "spiffe://breachmatch/admin/root",
        "spiffe://breachmatch/hospital",
        "spiffe://breachmatch/hospital/a/b",
        "spiffe://breachmatch/hospital/..",
        "spiffe://breachmatch/hospital/",
        "spiffe://breachmatch/hospital/a%2Fb",
        "spiffe://breachmatch/hospital/a b",
        "https://breachmatch/hospital/hospital-a",
        "SPIFFE://breachmatch/hospital/hospital-a",
    ],
)
def test_anything_else_is_no_identity(uri: str) -> None:
    with pytest.raises(IdentityError):
        parse_spiffe_uri(uri)


def test_the_common_name_does_not_count() -> None:
    with pytest.raises(IdentityError, match="no subject alternative names"):
        identity_from_certificate(_cert(common_name="hospital-a"))
    with pytest.raises(IdentityError, match="exactly one URI SAN, not 0"):
        identity_from_certificate(_cert(x509.DNSName("hospital-a")))


def test_two_uri_sans_name_nobody() -> None:
    two = _cert(
        x509.UniformResourceIdentifier(spiffe_uri(Role.HOSPITAL, "hospital-a")),
        x509.UniformResourceIdentifier(spiffe_uri(Role.OPERATOR, "operator")),
    )
    with pytest.raises(IdentityError, match="exactly one URI SAN, not 2"):
        identity_from_certificate(two)


def test_dev_pki_certificates_name_their_parties(dev_pki: DevPki) -> None:
    def of(directory: Path) -> Identity:
        return identity_from_pem((directory / "tls.crt").read_bytes())

    assert of(dev_pki.tenant_dir("hospital-b")) == Identity(Role.HOSPITAL, "hospital-b")
    assert of(dev_pki.operator_dir) == Identity(Role.OPERATOR, "operator")
    assert of(dev_pki.service_dir("ingest")) == Identity(Role.SERVICE, "ingest")
    with pytest.raises(IdentityError):
        of(dev_pki.nameless_dir)
    with pytest.raises(IdentityError, match="not PEM"):
        identity_from_pem(b"garbage")
