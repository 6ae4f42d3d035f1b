"""``breachmatch-matcher tenants sign``: a hospital joins and its certificate works at once.

The whole round trip through the real commands: the hospital's ``breachmatch
certificate request``, the operator's ``breachmatch-matcher tenants sign``
(with the CA the running matcher trusts), the hospital's ``certificate
install`` — then the new certificate is admitted by the real matcher as that
tenant. A request for another role never gets a certificate.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from breachmatch import tls
from breachmatch.cli import main as hospital_cli
from breachmatch.tenants import Tenants
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_matcher.cli import main as matcher_cli

RPC_TIMEOUT = 20.0


@pytest.fixture
def operator_args(matcher_files, tmp_path):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(matcher_files.tenants_file.read_text())
    return [
        "--ca-dir", str(matcher_files.pki.ca_dir),
        "--verify-key", str(matcher_files.keys.verify_key),
        "--tenants-file", str(tenants),
    ]  # fmt: skip


async def test_a_signed_request_is_a_working_hospital_certificate(
    matcher, matcher_files, operator_args, tmp_path, capsys
):
    tls_dir = tmp_path / "clinic-tls"
    at = ["--tls-dir", str(tls_dir)]
    assert hospital_cli(["certificate", "request", "--tenant", "clinic-new", *at]) == 0
    bundle = tmp_path / "clinic-new.bundle.json"
    request = str(tls_dir / "request.csr")
    assert matcher_cli(["tenants", "sign", request, *operator_args, "--out", str(bundle)]) == 0
    signed = capsys.readouterr().out
    assert hospital_cli(["certificate", "install", str(bundle), *at]) == 0
    installed = capsys.readouterr().out

    fingerprint = next(line for line in signed.splitlines() if line.startswith("fingerprint"))
    assert fingerprint in installed  # both sides show the same fingerprint
    tenants_file = operator_args[operator_args.index("--tenants-file") + 1]
    assert Tenants.load(Path(tenants_file)).is_known("clinic-new")
    assert json.loads(bundle.read_text())["operator_verify_key"] == (
        matcher_files.keys.verify_key.read_text().strip()
    )

    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(tls_dir))
    async with grpc.aio.secure_channel(f"localhost:{matcher.port}", credentials) as channel:
        reply = await matcher_pb2_grpc.MatcherStub(channel).GetKeyInfo(
            matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT
        )
    assert bytes(reply.operator_verify_key).hex() == (tls_dir / "operator.pub").read_text().strip()


def _request_for(uri: str, common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.mark.parametrize("role", ["operator", "service"])
def test_a_request_for_another_role_gets_no_certificate(operator_args, tmp_path, capsys, role):
    request = tmp_path / "request.csr"
    request.write_bytes(_request_for(f"spiffe://breachmatch/{role}/evil", "evil"))
    out = tmp_path / "evil.bundle.json"
    assert matcher_cli(["tenants", "sign", str(request), *operator_args, "--out", str(out)]) == 2
    assert "hospital identity only" in capsys.readouterr().err
    assert not out.exists()
    tenants_file = operator_args[operator_args.index("--tenants-file") + 1]
    assert "evil" not in Path(tenants_file).read_text()
