"""Who gets in: only certificates from the operator's CA that are still valid,
and to each method only the roles its allow-list names.

The TLS handshake refuses the others, so no handler runs for them: the proof
is that an Evaluate attempt leaves no budget entry for the tenant it claims.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import grpc.aio
import pytest
from nats.js.errors import KeyNotFoundError

from breachmatch import bus, oprf, tls
from breachmatch.authz import is_allowed
from breachmatch.identity import Role
from breachmatch.keys import KeyRing
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_dev.pki import EXPIRED_TENANT, FOREIGN_TENANT
from breachmatch_dev.rpc_probe import GARBAGE, full_name, methods_of, raw_call
from breachmatch_matcher.budget import budget_key

RPC_TIMEOUT = 10.0


def _refused_credentials(matcher_files) -> dict[str, grpc.ChannelCredentials]:
    pki = matcher_files.pki
    return {
        "expired": tls.channel_credentials(tls.TlsFiles.from_dir(pki.expired_dir)),
        "foreign CA": tls.channel_credentials(tls.TlsFiles.from_dir(pki.foreign_dir)),
        "no certificate": grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes()),
    }


@pytest.mark.parametrize("kind", ["expired", "foreign CA", "no certificate"])
async def test_untrusted_clients_are_refused_before_any_work(matcher, matcher_files, js, kind):
    credentials = _refused_credentials(matcher_files)[kind]
    _, elements = oprf.blind_batch([b"auth:1"])
    key_id = KeyRing.load(matcher_files.keys.oprf_dir).current.key_id
    async with grpc.aio.secure_channel(f"localhost:{matcher.port}", credentials) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info_error:
            await stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT)
        request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
        with pytest.raises(grpc.aio.AioRpcError) as evaluate_error:
            async for _ in stub.Evaluate(iter([request]), timeout=RPC_TIMEOUT):
                pass
    assert info_error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert evaluate_error.value.code() == grpc.StatusCode.UNAVAILABLE

    # Had a handler run, the valid key id would have charged the claimed tenant's budget.
    kv = await bus.key_value(js, bus.KV_BUDGETS)
    for tenant in (EXPIRED_TENANT, FOREIGN_TENANT):
        with pytest.raises(KeyNotFoundError):
            await kv.get(budget_key(tenant, datetime.now(UTC).date()))


_ROLES = {
    "hospital": (Role.HOSPITAL, lambda pki: pki.tenant_dir("mt-invalid")),
    "operator": (Role.OPERATOR, lambda pki: pki.operator_dir),
    "service": (Role.SERVICE, lambda pki: pki.service_dir("notifier")),
}


@pytest.mark.parametrize("who", sorted(_ROLES))
@pytest.mark.parametrize("method", methods_of(matcher_pb2.DESCRIPTOR), ids=lambda m: m.name)
async def test_each_method_admits_exactly_its_roles(matcher, matcher_files, method, who):
    """Undecodable bytes as probe: a denied role gets PERMISSION_DENIED, an allowed one
    INVALID_ARGUMENT (admitted, then refused when the request is decoded)."""
    role, directory = _ROLES[who]
    code = await raw_call(f"localhost:{matcher.port}", directory(matcher_files.pki), method)
    allowed = is_allowed(full_name(method), role)
    expected = grpc.StatusCode.INVALID_ARGUMENT if allowed else grpc.StatusCode.PERMISSION_DENIED
    assert code == expected


async def test_an_undecodable_message_mid_stream_ends_the_call_with_invalid_argument(
    matcher, matcher_files
):
    """The first batch is answered; the garbage after it is refused when it is decoded."""
    key_id = KeyRing.load(matcher_files.keys.oprf_dir).current.key_id
    _, elements = oprf.blind_batch([b"auth:mid-stream"])
    good = matcher_pb2.EvaluateRequest(batch_id=1, key_id=key_id, blinded_elements=elements)
    credentials = matcher_files.credentials("mt-invalid")
    async with grpc.aio.secure_channel(f"localhost:{matcher.port}", credentials) as channel:
        call = channel.stream_stream(
            "/breachmatch.v1.Matcher/Evaluate",
            request_serializer=None,
            response_deserializer=matcher_pb2.EvaluateResponse.FromString,
        )(iter([good.SerializeToString(), GARBAGE]), timeout=RPC_TIMEOUT)
        first = await call.read()
        assert isinstance(first, matcher_pb2.EvaluateResponse)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert first.batch_id == 1
    assert len(first.evaluated_elements) == 1
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
