"""Joining as a hospital: only a hospital identity can be requested, and a bundle is checked."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import nacl.signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from breachmatch.certificates import cert_pem
from breachmatch.cli import main as hospital_cli
from breachmatch.enrolment import (
    Bundle,
    CertificateAuthority,
    EnrolmentError,
    install_bundle,
    requested_tenant,
    sign_request,
    write_request,
)
from breachmatch.identity import Identity, Role, identity_from_certificate
from breachmatch.tenants import TenantConfigError, Tenants, add_tenant
from breachmatch_dev import DevPki, make_dev_pki


def _csr(*sans: x509.GeneralName, common_name: str = "clinic-c") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _uri(text: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(text)


def _bundle(tls_dir: Path, dev_pki: DevPki, tenant: str = "clinic-c") -> Bundle:
    request = write_request(tenant, tls_dir).read_bytes()
    ca = CertificateAuthority.load(dev_pki.ca_dir)
    cert = sign_request(request, ca)
    verify_key = bytes(nacl.signing.SigningKey.generate().verify_key)
    return Bundle(tenant, cert_pem(cert), cert_pem(ca.cert), verify_key)


def test_request_sign_install_gives_a_hospital_client_certificate(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    bundle = _bundle(tmp_path, dev_pki)
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert install_bundle(Bundle.from_json(bundle.to_json()), tmp_path) == Identity(
        Role.HOSPITAL, "clinic-c"
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert identity_from_certificate(cert) == Identity(Role.HOSPITAL, "clinic-c")
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(dev_pki.ca_cert.read_bytes()))
    assert (tmp_path / "ca.crt").read_bytes() == dev_pki.ca_cert.read_bytes()
    assert bytes.fromhex((tmp_path / "operator.pub").read_text()) == bundle.operator_verify_key


@pytest.mark.parametrize(
    ("sans", "common_name", "reason"),
    [
        ([_uri("spiffe://breachmatch/operator/clinic-c")], "clinic-c", "hospital identity only"),
        ([_uri("spiffe://breachmatch/service/matcher")], "matcher", "hospital identity only"),
        (
            [
                _uri("spiffe://breachmatch/hospital/clinic-c"),
                _uri("spiffe://breachmatch/hospital/x"),
            ],
            "clinic-c",
            "exactly one URI",
        ),
        (
            [_uri("spiffe://breachmatch/hospital/clinic-c"), x509.DNSName("matcher")],
            "clinic-c",
            "exactly one URI",
        ),
        ([_uri("spiffe://breachmatch/hospital/clinic-c")], "hospital-a", "common name"),
        ([_uri("spiffe://elsewhere/hospital/clinic-c")], "clinic-c", "not a breachmatch identity"),
        ([], "clinic-c", "names no identity"),
    ],
)
def test_a_request_for_anything_but_one_hospital_identity_is_refused(
    dev_pki: DevPki, sans: list[x509.GeneralName], common_name: str, reason: str
) -> None:
    with pytest.raises(EnrolmentError, match=reason):
        sign_request(
            _csr(*sans, common_name=common_name), CertificateAuthority.load(dev_pki.ca_dir)
        )


def test_a_tampered_request_is_refused() -> None:
    pem = _csr(_uri("spiffe://breachmatch/hospital/clinic-c"))
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(EnrolmentError, match="signature"):
        requested_tenant(tampered)
    with pytest.raises(EnrolmentError, match="not a PEM"):
        requested_tenant(b"hello")


def test_a_bundle_for_another_key_or_from_another_ca_is_refused(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    bundle = _bundle(tmp_path / "ours", dev_pki)
    write_request("clinic-c", tmp_path / "other")
    with pytest.raises(EnrolmentError, match="not for the key"):
        install_bundle(bundle, tmp_path / "other")
    other_ca = make_dev_pki(tmp_path / "other-pki")
    swapped = Bundle(
        bundle.tenant, bundle.certificate_pem, other_ca.ca_cert.read_bytes(), b"k" * 32
    )
    with pytest.raises(EnrolmentError, match="not issued by the bundled CA"):
        install_bundle(swapped, tmp_path / "ours")
    renamed = Bundle(
        "hospital-a", bundle.certificate_pem, bundle.ca_pem, bundle.operator_verify_key
    )
    with pytest.raises(EnrolmentError, match="not this tenant"):
        install_bundle(renamed, tmp_path / "ours")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with pytest.raises(EnrolmentError, match="not valid now"):
        install_bundle(bundle, tmp_path / "ours", now=later)
    assert not (tmp_path / "ours" / "tls.crt").exists()  # nothing was installed


def test_the_fingerprint_covers_the_ca_and_the_operator_key(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    bundle = _bundle(tmp_path, dev_pki)
    other_ca = make_dev_pki(tmp_path / "other-pki").ca_cert.read_bytes()
    fingerprints = {
        bundle.fingerprint(),
        Bundle(
            bundle.tenant, bundle.certificate_pem, other_ca, bundle.operator_verify_key
        ).fingerprint(),
        Bundle(bundle.tenant, bundle.certificate_pem, bundle.ca_pem, b"\x01" * 32).fingerprint(),
    }
    assert len(fingerprints) == 3
    assert bundle.fingerprint() == Bundle.from_json(bundle.to_json()).fingerprint()


def test_garbage_bundles_and_existing_keys_are_refused(tmp_path: Path) -> None:
    for text in ("", "{}", json.dumps({"version": 1}), "[1]"):
        with pytest.raises(EnrolmentError, match="not a breachmatch enrolment bundle"):
            Bundle.from_json(text)
    write_request("clinic-c", tmp_path)
    with pytest.raises(EnrolmentError, match="refusing to replace a private key"):
        write_request("clinic-c", tmp_path)
    with pytest.raises(EnrolmentError, match="not a valid identity name"):
        write_request("../../etc", tmp_path / "x")


def test_add_tenant_adds_once_and_never_breaks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"default_daily_budget": 7, "tenants": {"hospital-a": {}}}))
    assert add_tenant(path, "clinic-c") is True
    assert add_tenant(path, "clinic-c") is False
    loaded = Tenants.load(path)
    assert set(loaded.known) == {"hospital-a", "clinic-c"}
    assert loaded.get("clinic-c").daily_budget == 7
    path.write_text(json.dumps({"tenants": {"x": {"budget": 1}}}))
    with pytest.raises(TenantConfigError):
        add_tenant(path, "clinic-c")
    assert "clinic-c" not in path.read_text()


def test_cli_request_and_install(
    tmp_path: Path, dev_pki: DevPki, capsys: pytest.CaptureFixture[str]
) -> None:
    tls_dir = tmp_path / "tls"
    assert (
        hospital_cli(["certificate", "request", "--tenant", "clinic-c", "--tls-dir", str(tls_dir)])
        == 0
    )
    request = (tls_dir / "request.csr").read_bytes()
    ca = CertificateAuthority.load(dev_pki.ca_dir)
    bundle = Bundle(
        "clinic-c", cert_pem(sign_request(request, ca)), cert_pem(ca.cert), b"\x02" * 32
    )
    (tmp_path / "bundle.json").write_text(bundle.to_json())
    capsys.readouterr()
    argv = ["certificate", "install", str(tmp_path / "bundle.json"), "--tls-dir", str(tls_dir)]
    assert hospital_cli(argv) == 0
    assert bundle.fingerprint() in capsys.readouterr().out
    (tmp_path / "bundle.json").write_text("not a bundle")
    assert hospital_cli(argv) == 1
    assert "not a breachmatch enrolment bundle" in capsys.readouterr().err
