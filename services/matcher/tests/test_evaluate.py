"""Evaluate over real mTLS against a real matcher: correctness, validation, cancellation, audit."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import grpc.aio
import pytest

from breachmatch import bus, keys, oprf, voprf
from breachmatch.keys import KeyRing
from breachmatch.statements import KeyPurpose, SignedKeyStatement, verify_statement
from breachmatch.v1 import breach_pb2, matcher_pb2

RPC_TIMEOUT = 20.0


def _inputs(label: str, count: int) -> list[bytes]:
    return [f"test:{label}:{i}".encode() for i in range(count)]


async def _refusal(evaluate, stub, requests) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluate(stub, requests)
    return caught.value


async def test_round_trip_equals_evaluate(matcher, matcher_files, connect, key_info, evaluate):
    """Every batch comes back proven under the public key the operator stated for its key id."""
    stub = connect(matcher.port, "mt-roundtrip")
    info = await key_info(stub)
    key_id = info.current_key_id
    secret = KeyRing.load(matcher_files.keys.oprf_dir).secret_for(key_id)
    [served] = info.keys
    statement = verify_statement(
        SignedKeyStatement(served.statement.statement, served.statement.signature),
        keys.load_verify_key(matcher_files.keys.verify_key),
        KeyPurpose.OPRF,
        key_id=key_id,
    )
    assert statement.public_key == oprf.public_key(secret)
    # 2500 crosses oprf.PARALLEL_THRESHOLD, so both the inline and the pool path run.
    batches = [_inputs("a", 1), _inputs("b", 2500), _inputs("c", 17)]
    blinded = [oprf.blind_batch(inputs) for inputs in batches]
    requests = [
        matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements, batch_id=100 + i)
        for i, (_, elements) in enumerate(blinded)
    ]
    responses = await evaluate(stub, requests)

    assert [r.batch_id for r in responses] == [100, 101, 102]
    assert {r.key_id for r in responses} == {key_id}
    for inputs, (blinds, elements), response in zip(batches, blinded, responses, strict=True):
        outputs = voprf.finalize_batch(
            statement.public_key,
            inputs,
            blinds,
            elements,
            list(response.evaluated_elements),
            response.proof,
        )
        assert outputs == [oprf.evaluate(secret, data) for data in inputs]


async def test_invalid_elements_are_named_by_index(matcher, connect, key_info, evaluate):
    stub = connect(matcher.port, "mt-invalid")
    key_id = (await key_info(stub)).current_key_id
    _, good = oprf.blind_batch(_inputs("v", 3000))
    crafted = good[7][:31] + bytes([good[7][31] | 0x80])  # libsodium would decode this
    cases = {
        5: bytes(32),  # the identity
        2999: b"\xff" * 32,  # not a canonical encoding (pool path)
        1: b"\x01" * 31,  # wrong length
        7: crafted,  # a valid element with the top bit set (RFC 9496: not canonical)
        2500: crafted,  # the same in a pool slice
    }
    for index, bad in cases.items():
        elements = list(good)
        elements[index] = bad
        request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
        error = await _refusal(evaluate, stub, [request])
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"index {index}" in (error.details() or "")
    empty = matcher_pb2.EvaluateRequest(key_id=key_id)
    assert (await _refusal(evaluate, stub, [empty])).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_batch_is_refused_with_the_limit(matcher, connect, key_info, evaluate):
    stub = connect(matcher.port, "mt-invalid")
    key_id = (await key_info(stub)).current_key_id
    limit = matcher.config.max_batch
    _, elements = oprf.blind_batch(_inputs("o", 1))
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements * (limit + 1))
    error = await _refusal(evaluate, stub, [request])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{limit + 1} elements exceeds the limit of {limit}" in (error.details() or "")


async def test_missing_and_unknown_key_ids(matcher, connect, evaluate):
    stub = connect(matcher.port, "mt-invalid")
    _, elements = oprf.blind_batch(_inputs("k", 1))
    missing = await _refusal(
        evaluate, stub, [matcher_pb2.EvaluateRequest(blinded_elements=elements)]
    )
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = await _refusal(
        evaluate,
        stub,
        [matcher_pb2.EvaluateRequest(key_id="k-nonexistent", blinded_elements=elements)],
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert "refresh key info" in (unknown.details() or "")


async def test_cancelled_call_stops_and_audits_what_it_charged(matcher, connect, js, key_info):
    """A client that goes away mid-stream: later batches are not evaluated, and the
    call's one audit event counts what was evaluated — no element in it."""
    tenant = "mt-cancel"
    audits = await js.subscribe(
        bus.subject_for(bus.AUDIT_EVALUATE, tenant), stream=bus.STREAM_AUDIT, ordered_consumer=True
    )
    stub = connect(matcher.port, tenant)
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch(_inputs("x", 4096))
    batches = 40
    call = stub.Evaluate(timeout=RPC_TIMEOUT)
    for batch_id in range(batches):
        request = matcher_pb2.EvaluateRequest(
            key_id=key_id, blinded_elements=elements, batch_id=batch_id
        )
        await call.write(request)
    first = await call.read()
    assert first.batch_id == 0
    call.cancel()

    msg = await audits.next_msg(timeout=RPC_TIMEOUT)
    event = breach_pb2.EvaluationAudit.FromString(msg.data)
    assert (event.tenant, event.key_id) == (tenant, key_id)
    assert 4096 <= event.count < 4096 * batches
    assert event.count % 4096 == 0
    assert event.request_id
    assert not any(element in msg.data for element in elements[:64])

    kv = await bus.key_value(js, bus.KV_BUDGETS)
    keys = [k for k in await kv.keys() if k.startswith(f"{tenant}.")]
    assert len(keys) == 1
    used = (await kv.get(keys[0])).value
    assert used is not None
    # A charge that lands just as the call is cancelled is billed, never evaluated and
    # not audited; so the budget may exceed the audit by at most that one batch.
    assert event.count <= int(used) <= event.count + 4096
    await audits.unsubscribe()


async def test_metrics_count_per_tenant(matcher, connect, key_info, evaluate):
    stub = connect(matcher.port, "mt-roundtrip")
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch(_inputs("m", 3))
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
    assert len(await evaluate(stub, [request])) == 1
    keyless = matcher_pb2.EvaluateRequest(blinded_elements=elements)
    assert (await _refusal(evaluate, stub, [keyless])).code() == grpc.StatusCode.INVALID_ARGUMENT
    url = f"http://127.0.0.1:{matcher.service.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'breachmatch_matcher_evaluated_elements_total{tenant="mt-roundtrip"}' in text
    assert "breachmatch_matcher_evaluate_batch_seconds_bucket" in text
    assert 'breachmatch_matcher_invalid_requests_total{reason="no_key_id"}' in text
