"""TLS set-up and connection errors say which file, which address and which flag."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from breachmatch.client.connection import Endpoint, load_identity, open_channel
from breachmatch.client.errors import ServiceUnavailableError, TlsSetupError
from breachmatch.client.matcher import MatcherClient
from breachmatch.client.retry import Backoff
from breachmatch.server import ServerConfig, Service
from breachmatch_dev import DevPki, make_dev_pki

FAST = Backoff(initial=0.01, maximum=0.02, attempts=2)


def test_identity_is_the_hospital_name_in_the_certificate_uri(dev_pki: DevPki):
    assert load_identity(dev_pki.tenant_dir("hospital-a")).tenant == "hospital-a"


@pytest.mark.parametrize("who", ["operator", "service", "nameless"])
def test_a_certificate_that_is_not_a_hospitals_is_named(dev_pki: DevPki, who: str):
    directory = {
        "operator": dev_pki.operator_dir,
        "service": dev_pki.service_dir("matcher"),
        "nameless": dev_pki.nameless_dir,
    }[who]
    expected = "names no hospital" if who == "nameless" else "not a hospital's"
    with pytest.raises(TlsSetupError, match=expected):
        load_identity(directory)


def test_missing_file_is_named(tmp_path: Path, dev_pki: DevPki):
    broken = tmp_path / "tls"
    shutil.copytree(dev_pki.tenant_dir("hospital-a"), broken)
    (broken / "tls.key").unlink()
    with pytest.raises(TlsSetupError, match=r"tls\.key is missing.*--tls-dir"):
        load_identity(broken)


def test_key_of_another_certificate_is_named(tmp_path: Path, dev_pki: DevPki):
    mixed = tmp_path / "tls"
    shutil.copytree(dev_pki.tenant_dir("hospital-a"), mixed)
    shutil.copy(dev_pki.tenant_dir("hospital-b") / "tls.key", mixed / "tls.key")
    with pytest.raises(TlsSetupError, match="is not the private key of"):
        load_identity(mixed)


def test_expired_certificate_is_named_before_any_connection(dev_pki: DevPki):
    with pytest.raises(TlsSetupError, match=r"tls\.crt expired on"):
        load_identity(dev_pki.expired_dir)
    later = datetime.now(UTC) + timedelta(days=365)
    with pytest.raises(TlsSetupError, match="ask the operator for a new one"):
        load_identity(dev_pki.tenant_dir("hospital-a"), now=later)


def test_not_a_certificate_is_named(tmp_path: Path, dev_pki: DevPki):
    garbled = tmp_path / "tls"
    shutil.copytree(dev_pki.tenant_dir("hospital-a"), garbled)
    (garbled / "ca.crt").write_text("hello")
    with pytest.raises(TlsSetupError, match=r"ca\.crt is not a PEM certificate"):
        load_identity(garbled)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(address: str, tls_dir: Path) -> MatcherClient:
    endpoint = Endpoint("matcher", address, "--matcher", tls_dir)
    return MatcherClient(open_channel(endpoint, load_identity(tls_dir)), endpoint, FAST)


def test_unreachable_matcher_names_address_and_flag(dev_pki: DevPki):
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ServiceUnavailableError) as failed:
        _client(address, dev_pki.tenant_dir("hospital-a")).key_info()
    assert address in str(failed.value)
    assert "is the matcher running? check --matcher" in str(failed.value)


@pytest.fixture
async def tls_server(dev_pki: DevPki) -> AsyncIterator[int]:
    """A real mTLS gRPC server of the dev PKI (health only: Matcher calls are UNIMPLEMENTED)."""
    service = Service("probe", ServerConfig("127.0.0.1:0", dev_pki.service_dir("matcher")))
    await service.start(["grpc.health.v1.Health"])
    yield service.bound_port
    await service.drain()


async def test_server_not_signed_by_our_ca_names_ca_file(tls_server: int, tmp_path: Path):
    other = make_dev_pki(tmp_path / "other-pki")
    tls_dir = other.tenant_dir("hospital-a")
    client = _client(f"127.0.0.1:{tls_server}", tls_dir)
    with pytest.raises(TlsSetupError) as failed:
        await asyncio.to_thread(client.key_info)
    assert str(tls_dir / "ca.crt") in str(failed.value)


async def test_refused_client_certificate_is_explained(tls_server: int, dev_pki: DevPki):
    client = _client(f"127.0.0.1:{tls_server}", dev_pki.foreign_dir)
    with pytest.raises(ServiceUnavailableError, match="may refuse our client certificate"):
        await asyncio.to_thread(client.key_info)
