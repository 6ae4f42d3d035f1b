"""mTLS against a real grpc.aio server: who gets in, who does not, and what the handler sees.

The per-role allow-lists of the real services are tested in each service's
tests and in tests/test_attacks.py; here a bare server with the health
service (open to every role) and one unlisted method pins down the
interceptor itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # untyped re-export

from breachmatch.identity import Identity, Role
from breachmatch.tls import (
    AuthInterceptor,
    TlsFiles,
    channel_credentials,
    current_identity,
    current_tenant,
    server_credentials,
)
from breachmatch_dev import DevPki

RPC_TIMEOUT = 10.0


class TenantRecordingHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """The stock health service, noting which caller (and hospital tenant) each call ran for.

    `Watch` is rewritten as an async generator so the streaming path of the
    interceptor is exercised too; `Check` is the stock coroutine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tenants: list[str] = []
        self.callers: list[Identity] = []

    def _record(self) -> None:
        self.callers.append(current_identity())
        if current_identity().role is Role.HOSPITAL:
            self.tenants.append(current_tenant())

    async def Check(self, request: Any, context: Any) -> Any:
        self._record()
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self._record()
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


UNLISTED_METHOD = "/breachmatch.test.Unlisted/Call"


async def _unlisted(request: bytes, context: Any) -> bytes:
    raise AssertionError("a method missing from the allow-list must never run")


def _unlisted_handler() -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        "breachmatch.test.Unlisted", {"Call": grpc.unary_unary_rpc_method_handler(_unlisted)}
    )


@dataclass
class RunningServer:
    address: str
    servicer: TenantRecordingHealth


async def _serve(
    dev_pki: DevPki, *, require_client_auth: bool
) -> tuple[grpc.aio.Server, RunningServer]:
    servicer = TenantRecordingHealth()
    server = grpc.aio.server(interceptors=[AuthInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((_unlisted_handler(),))
    credentials = server_credentials(
        TlsFiles.from_dir(dev_pki.service_dir("matcher")), require_client_auth=require_client_auth
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, RunningServer(f"127.0.0.1:{port}", servicer)


@pytest.fixture
async def mtls_server(dev_pki: DevPki) -> AsyncIterator[RunningServer]:
    server, running = await _serve(dev_pki, require_client_auth=True)
    yield running
    await server.stop(grace=None)


@pytest.fixture
async def tls_only_server(dev_pki: DevPki) -> AsyncIterator[RunningServer]:
    server, running = await _serve(dev_pki, require_client_auth=False)
    yield running
    await server.stop(grace=None)


async def _check(address: str, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT)
        return int(response.status)


def _server_only_trust(dev_pki: DevPki) -> grpc.ChannelCredentials:
    """A client that verifies the server but presents no certificate of its own."""
    return grpc.ssl_channel_credentials(root_certificates=dev_pki.ca_cert.read_bytes())


async def test_each_tenant_is_seen_as_the_hospital_name_in_its_certificate_uri(
    mtls_server: RunningServer, dev_pki: DevPki
) -> None:
    statuses = await asyncio.gather(
        *(
            _check(
                mtls_server.address, channel_credentials(TlsFiles.from_dir(dev_pki.tenant_dir(t)))
            )
            for t in ("hospital-a", "hospital-b")
        )
    )
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2
    assert sorted(mtls_server.servicer.tenants) == ["hospital-a", "hospital-b"]


async def test_streaming_handler_sees_the_tenant(
    mtls_server: RunningServer, dev_pki: DevPki
) -> None:
    credentials = channel_credentials(TlsFiles.from_dir(dev_pki.tenant_dir("hospital-b")))
    async with grpc.aio.secure_channel(mtls_server.address, credentials) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT
        )
        first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert mtls_server.servicer.tenants == ["hospital-b"]


async def test_operator_and_service_callers_are_identified_by_role_and_have_no_tenant(
    mtls_server: RunningServer, dev_pki: DevPki
) -> None:
    for directory in (dev_pki.operator_dir, dev_pki.service_dir("notifier")):
        status = await _check(
            mtls_server.address, channel_credentials(TlsFiles.from_dir(directory))
        )
        assert status == health_pb2.HealthCheckResponse.SERVING
    assert mtls_server.servicer.callers == [
        Identity(Role.OPERATOR, "operator"),
        Identity(Role.SERVICE, "notifier"),
    ]
    assert mtls_server.servicer.tenants == []


@pytest.mark.parametrize("who", ["expired", "foreign", "no-cert"])
async def test_bad_client_certificates_fail_at_the_handshake(
    mtls_server: RunningServer, dev_pki: DevPki, who: str
) -> None:
    credentials = {
        "expired": lambda: channel_credentials(TlsFiles.from_dir(dev_pki.expired_dir)),
        "foreign": lambda: channel_credentials(TlsFiles.from_dir(dev_pki.foreign_dir)),
        "no-cert": lambda: _server_only_trust(dev_pki),
    }[who]()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _check(mtls_server.address, credentials)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls_server.servicer.tenants == []


async def test_call_without_client_certificate_is_unauthenticated_before_the_handler(
    tls_only_server: RunningServer, dev_pki: DevPki
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _check(tls_only_server.address, _server_only_trust(dev_pki))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert tls_only_server.servicer.tenants == []


async def test_certificate_without_an_identity_uri_is_unauthenticated_before_the_handler(
    mtls_server: RunningServer, dev_pki: DevPki
) -> None:
    credentials = channel_credentials(TlsFiles.from_dir(dev_pki.nameless_dir))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _check(mtls_server.address, credentials)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "URI SAN" in (failure.value.details() or "")
    assert mtls_server.servicer.callers == []


@pytest.mark.parametrize("who", ["hospital-a", "operator"])
async def test_method_missing_from_the_allow_list_is_denied_to_everyone(
    mtls_server: RunningServer, dev_pki: DevPki, who: str
) -> None:
    directory = dev_pki.operator_dir if who == "operator" else dev_pki.tenant_dir(who)
    credentials = channel_credentials(TlsFiles.from_dir(directory))
    async with grpc.aio.secure_channel(mtls_server.address, credentials) as channel:
        call = channel.unary_unary(
            UNLISTED_METHOD, request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(b"", timeout=RPC_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_undecodable_request_is_invalid_argument_and_logged_without_traceback(
    mtls_server: RunningServer, dev_pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = channel_credentials(TlsFiles.from_dir(dev_pki.tenant_dir("hospital-a")))
    async with grpc.aio.secure_channel(mtls_server.address, credentials) as channel:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(b"\x0a\x05ab", timeout=RPC_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert mtls_server.servicer.callers == []
    # grpc's own decoding would log "Exception deserializing request" with a traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_unknown_method_is_still_unimplemented(
    mtls_server: RunningServer, dev_pki: DevPki
) -> None:
    credentials = channel_credentials(TlsFiles.from_dir(dev_pki.tenant_dir("hospital-a")))
    async with grpc.aio.secure_channel(mtls_server.address, credentials) as channel:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/NoSuchMethod",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(b"", timeout=RPC_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_current_tenant_outside_an_rpc_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="AuthInterceptor"):
        current_tenant()
    with pytest.raises(RuntimeError, match="AuthInterceptor"):
        current_identity()
