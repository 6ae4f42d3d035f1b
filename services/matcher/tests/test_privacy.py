"""Promise 1: the matcher never sees a patient identifier — not in clear, not hashed.

An interceptor on the real server records every request message exactly as
the matcher receives it (serialized bytes after TLS) plus all call metadata.
A hospital-side flow runs over it with realistic identifiers, and then every
recorded byte string is searched for the identifiers, their OPRF inputs, plain
SHA-256/SHA-512 digests of both (raw and hex), the unblinded group element
H(input) and the final token. The blinded elements themselves must be in the
record — otherwise the recorder would prove nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from breachmatch import bus, oprf
from breachmatch.keys import KeyRing
from breachmatch.v1 import breach_pb2, matcher_pb2

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor

RPC_TIMEOUT = 20.0
TENANT = "mt-privacy"
IDENTIFIERS = [
    "010203-1234",
    "0102031234",
    "Karen.Hansen@Example.dk",
    "karen.hansen@example.dk",
    "+45 12 34 56 78",
    "+4512345678",
    "Søren Ærø Åberg",
    "soeren aeroe aaberg 1980-02-01",
]


class RecordEverythingReceived(_Interceptor):
    """Keeps the serialized bytes of every request message and every metadata value."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        for _, value in details.invocation_metadata or ():
            self.received.append(value if isinstance(value, bytes) else value.encode())
        self.received.append(details.method.encode())
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        deserialize = handler.request_deserializer

        def recording(raw: bytes) -> Any:
            self.received.append(bytes(raw))
            return deserialize(raw)

        return handler._replace(request_deserializer=recording)


def _forbidden(inputs: list[bytes], secret: bytes) -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    texts = [text.encode() for text in IDENTIFIERS]
    for i, value in enumerate([*texts, *inputs]):
        needles[f"value {i}"] = value
        for name in ("sha256", "sha512"):
            digest = hashlib.new(name, value)
            needles[f"{name} {i}"] = digest.digest()
            needles[f"{name} hex {i}"] = digest.hexdigest().encode()
            needles[f"{name} HEX {i}"] = digest.hexdigest().upper().encode()
    for i, data in enumerate(inputs):
        needles[f"H(input) {i}"] = oprf.hash_to_group(data)
        needles[f"token {i}"] = oprf.evaluate(secret, data)
    return needles


async def test_matcher_receives_no_identifier_nor_a_hash_of_one(
    matcher_files, nats_url, start_matcher, connect, key_info, evaluate, js
):
    recorder = RecordEverythingReceived()
    app = await start_matcher(matcher_files.config(nats_url, workers=1), (recorder,))
    audits = await js.subscribe(
        bus.subject_for(bus.AUDIT_EVALUATE, TENANT), stream=bus.STREAM_AUDIT, ordered_consumer=True
    )
    stub = connect(app.port, TENANT)

    info = await key_info(stub)
    inputs = [b"cpr:" + text.encode() for text in IDENTIFIERS]
    blinds, blinded = oprf.blind_batch(inputs)
    responses = await evaluate(
        stub,
        [
            matcher_pb2.EvaluateRequest(
                key_id=info.current_key_id, blinded_elements=blinded[:4], batch_id=1
            ),
            matcher_pb2.EvaluateRequest(
                key_id=info.current_key_id, blinded_elements=blinded[4:], batch_id=2
            ),
        ],
    )
    evaluated = [e for r in responses for e in r.evaluated_elements]
    tokens = oprf.finalize_batch(inputs, blinds, evaluated)
    secret = KeyRing.load(matcher_files.keys.oprf_dir).secret_for(info.current_key_id)
    assert tokens == [oprf.evaluate(secret, data) for data in inputs]  # the flow really ran
    await stub.ListBreaches(matcher_pb2.ListBreachesRequest(), timeout=RPC_TIMEOUT)

    received = b"\x00".join(recorder.received)
    assert all(element in received for element in blinded)  # the recorder saw the traffic
    found = [name for name, needle in _forbidden(inputs, secret).items() if needle in received]
    assert found == []

    # The audit event of that call: counts only.
    msg = await audits.next_msg(timeout=RPC_TIMEOUT)
    audit = breach_pb2.EvaluationAudit.FromString(msg.data)
    assert (audit.tenant, audit.key_id, audit.count) == (TENANT, info.current_key_id, len(inputs))
    leaked = [n for n, needle in _forbidden(inputs, secret).items() if needle in msg.data]
    assert leaked == []
    assert not any(element in msg.data for element in blinded + evaluated)
    await audits.unsubscribe()
