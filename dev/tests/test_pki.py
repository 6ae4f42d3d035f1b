"""The dev PKI chains and names parties the way the mTLS tests and the demo rely on."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from breachmatch_dev import DevPki, make_dev_pki
from breachmatch_dev.pki import SERVICES


def _cert(directory: Path, name: str = "tls.crt") -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / name).read_bytes())


def _common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _uris(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def _leaf_dirs(pki: DevPki) -> list[Path]:
    tenants = [pki.tenant_dir(t) for t in pki.tenants]
    services = [pki.service_dir(s) for s in SERVICES]
    return [*services, pki.operator_dir, *tenants, pki.expired_dir, pki.foreign_dir]


@pytest.mark.parametrize("service", SERVICES)
def test_service_certificate_serves_localhost_and_is_its_own_client_identity(
    dev_pki: DevPki, service: str
) -> None:
    store = Store([_cert(dev_pki.ca_dir, "ca.crt")])
    server = _cert(dev_pki.service_dir(service))
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(server, [])
        assert chain[-1] == _cert(dev_pki.ca_dir, "ca.crt")
    assert _usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _uris(server) == [f"spiffe://breachmatch/service/{service}"]


def test_operator_certificate_is_a_client_cert_with_the_operator_role(dev_pki: DevPki) -> None:
    cert = _cert(dev_pki.operator_dir)
    cert.verify_directly_issued_by(_cert(dev_pki.ca_dir, "ca.crt"))
    assert _uris(cert) == ["spiffe://breachmatch/operator/operator"]
    assert _usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_nameless_certificate_is_from_the_dev_ca_but_carries_no_uri(dev_pki: DevPki) -> None:
    cert = _cert(dev_pki.nameless_dir)
    cert.verify_directly_issued_by(_cert(dev_pki.ca_dir, "ca.crt"))
    with pytest.raises(x509.ExtensionNotFound):
        _uris(cert)


def test_a_pki_made_from_another_ones_ca_shares_its_trust(dev_pki: DevPki, tmp_path: Path) -> None:
    derived = make_dev_pki(tmp_path, tenants=("clinic-c",), ca=dev_pki)
    assert derived.ca_cert.read_bytes() == dev_pki.ca_cert.read_bytes()
    _cert(derived.tenant_dir("clinic-c")).verify_directly_issued_by(_cert(dev_pki.ca_dir, "ca.crt"))
    assert make_dev_pki(tmp_path, tenants=("clinic-c",), ca=dev_pki) == derived


@pytest.mark.parametrize("tenant", ["hospital-a", "hospital-b"])
def test_tenant_certificate_is_a_client_cert_named_after_the_tenant(
    dev_pki: DevPki, tenant: str
) -> None:
    ca = _cert(dev_pki.ca_dir, "ca.crt")
    cert = _cert(dev_pki.tenant_dir(tenant))
    cert.verify_directly_issued_by(ca)
    assert _common_name(cert) == tenant
    assert _uris(cert) == [f"spiffe://breachmatch/hospital/{tenant}"]
    assert _usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def test_expired_certificate_is_from_the_dev_ca_but_expired(dev_pki: DevPki) -> None:
    cert = _cert(dev_pki.expired_dir)
    cert.verify_directly_issued_by(_cert(dev_pki.ca_dir, "ca.crt"))
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    assert _common_name(cert) == "expired"


def test_foreign_certificate_claims_a_tenant_but_does_not_chain_to_the_dev_ca(
    dev_pki: DevPki,
) -> None:
    ca = _cert(dev_pki.ca_dir, "ca.crt")
    cert = _cert(dev_pki.foreign_dir)
    assert _common_name(cert) == "hospital-a"
    assert _uris(cert) == ["spiffe://breachmatch/hospital/hospital-a"]
    assert cert.issuer == ca.subject  # an impostor CA: same name, different key
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(ca)


def test_every_directory_trusts_the_dev_ca_and_keys_are_owner_only(dev_pki: DevPki) -> None:
    ca_bytes = dev_pki.ca_cert.read_bytes()
    for directory in _leaf_dirs(dev_pki):
        assert (directory / "ca.crt").read_bytes() == ca_bytes
        assert stat.S_IMODE((directory / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((dev_pki.ca_dir / "ca.key").stat().st_mode) == 0o600


def test_second_call_reuses_a_valid_pki(tmp_path: Path) -> None:
    first = make_dev_pki(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = make_dev_pki(tmp_path)
    assert second == first
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_changed_names_or_damaged_files_regenerate(tmp_path: Path) -> None:
    make_dev_pki(tmp_path)
    old_ca = (tmp_path / "ca" / "ca.crt").read_bytes()
    pki = make_dev_pki(tmp_path, tenants=("hospital-a", "clinic-c"))
    assert (tmp_path / "ca" / "ca.crt").read_bytes() != old_ca
    assert _common_name(_cert(pki.tenant_dir("clinic-c"))) == "clinic-c"

    regenerated_ca = pki.ca_cert.read_bytes()
    (pki.tenant_dir("hospital-a") / "tls.key").write_bytes(b"not a key")
    repaired = make_dev_pki(tmp_path, tenants=("hospital-a", "clinic-c"))
    assert repaired.ca_cert.read_bytes() != regenerated_ca
    key_pem = (repaired.tenant_dir("hospital-a") / "tls.key").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_unknown_tenant_and_reserved_name_are_refused(tmp_path: Path, dev_pki: DevPki) -> None:
    with pytest.raises(KeyError):
        dev_pki.tenant_dir("hospital-z")
    with pytest.raises(ValueError, match="reserved"):
        make_dev_pki(tmp_path, tenants=("expired",))
