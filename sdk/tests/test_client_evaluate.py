"""The OPRF pipeline against a real mTLS gRPC server that evaluates for real but misbehaves on cue.

The servicer below is a Matcher in miniature: it evaluates with a real OPRF
key (so every output can be checked against `oprf.evaluate`), counts what it
receives, and can be told to fail a call the way a real matcher or network
does — UNAVAILABLE mid-stream, RESOURCE_EXHAUSTED with the remaining budget
in the trailers, FAILED_PRECONDITION for a retired key, or a wrong answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

from breachmatch import oprf
from breachmatch.client.connection import Endpoint, load_identity, open_channel
from breachmatch.client.errors import (
    BudgetExhaustedError,
    KeyRetiredError,
    RpcFailedError,
    ServiceUnavailableError,
)
from breachmatch.client.evaluate import STREAM_DEPTH, OprfPipeline, PipelineOptions
from breachmatch.client.matcher import MatcherClient
from breachmatch.client.retry import Backoff
from breachmatch.dev import DevPki
from breachmatch.server import ServerConfig, Service
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc

KEY_ID = "k-test"
FAST = Backoff(initial=0.01, maximum=0.05, attempts=4)
INPUTS = [f"breachmatch:v1:email:p{i}@example.dk".encode() for i in range(200)]

#: Decides, per (call number, batch number within the call), what to do instead of answering.
Fault = Callable[[int, int], tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None]


@dataclass
class FlakyMatcher(matcher_pb2_grpc.MatcherServicer):
    secret: bytes = field(default_factory=lambda: oprf.random_key_pair()[0])
    key_info_failures: int = 0
    fault: Fault = lambda call, batch: None
    corrupt: bool = False
    received: int = 0
    calls: int = 0

    async def GetKeyInfo(self, request: Any, context: Any) -> matcher_pb2.GetKeyInfoResponse:
        if self.key_info_failures:
            self.key_info_failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return matcher_pb2.GetKeyInfoResponse(current_key_id=KEY_ID, max_batch_size=64)

    async def Evaluate(
        self, requests: AsyncIterator[matcher_pb2.EvaluateRequest], context: Any
    ) -> AsyncIterator[matcher_pb2.EvaluateResponse]:
        self.calls += 1
        call = self.calls
        batch = 0
        async for request in requests:
            failure = self.fault(call, batch)
            if failure is not None:
                code, message, trailers = failure
                await context.abort(code, message, trailing_metadata=trailers)
            self.received += len(request.blinded_elements)
            evaluated = oprf.blind_evaluate_batch(self.secret, list(request.blinded_elements))
            if self.corrupt:
                evaluated[0] = bytes(32)
            yield matcher_pb2.EvaluateResponse(
                key_id=request.key_id, evaluated_elements=evaluated, batch_id=request.batch_id
            )
            batch += 1


def flaky(**behaviour: Any) -> FlakyMatcher:
    """A FlakyMatcher; the breach RPCs keep the generated base's UNIMPLEMENTED answers,
    which the stubs' types declare abstract."""
    return FlakyMatcher(**behaviour)  # type: ignore[abstract]


@pytest.fixture
async def serve(dev_pki: DevPki) -> AsyncIterator[Callable[[FlakyMatcher], Any]]:
    services: list[Service] = []

    async def start(servicer: FlakyMatcher) -> MatcherClient:
        service = Service("flaky", ServerConfig("127.0.0.1:0", dev_pki.service_dir("matcher")))
        matcher_pb2_grpc.add_MatcherServicer_to_server(servicer, service.server)
        await service.start(["breachmatch.v1.Matcher"])
        services.append(service)
        tls_dir = dev_pki.tenant_dir("hospital-a")
        endpoint = Endpoint("matcher", f"127.0.0.1:{service.bound_port}", "--matcher", tls_dir)
        return MatcherClient(open_channel(endpoint, load_identity(tls_dir)), endpoint, FAST)

    yield start
    for service in services:
        await service.drain()


def _run(
    client: MatcherClient, inputs: list[bytes], **options: Any
) -> tuple[dict[bytes, bytes], int]:
    done: dict[bytes, bytes] = {}

    def on_batch(batch: Any, outputs: list[bytes]) -> None:
        assert not set(batch) & set(done), "a batch was checkpointed twice"
        done.update(zip(batch, outputs, strict=True))

    pipeline = OprfPipeline(client, PipelineOptions(backoff=FAST, **options))
    sent = pipeline.run(KEY_ID, inputs, on_batch)
    return done, sent


async def test_outputs_equal_the_unblinded_prf_with_several_streams(serve):
    matcher = flaky()
    client = await serve(matcher)
    done, sent = await asyncio.to_thread(_run, client, INPUTS, batch_size=16, streams=3)
    assert done == {data: oprf.evaluate(matcher.secret, data) for data in INPUTS}
    assert sent == matcher.received == len(INPUTS)
    assert matcher.calls == 3


async def test_unavailable_mid_stream_resends_only_unfinished_batches(serve):
    matcher = flaky(
        fault=lambda call, batch: (
            (grpc.StatusCode.UNAVAILABLE, "going away", ()) if call == 1 and batch == 4 else None
        )
    )
    client = await serve(matcher)
    done, sent = await asyncio.to_thread(_run, client, INPUTS, batch_size=16, streams=1)
    assert done == {data: oprf.evaluate(matcher.secret, data) for data in INPUTS}
    assert matcher.calls == 2
    # Answered batches were not sent again: the matcher evaluated each input exactly once.
    assert matcher.received == len(INPUTS)
    # Sent twice: the refused batch and those queued behind it (at most STREAM_DEPTH).
    assert len(INPUTS) < sent <= len(INPUTS) + STREAM_DEPTH * 16


async def test_key_info_rides_out_a_restart(serve):
    client = await serve(flaky(key_info_failures=2))
    info = await asyncio.to_thread(client.key_info)
    assert info.current_key_id == KEY_ID
    assert info.max_batch_size == 64


async def test_a_matcher_that_stays_away_is_reported_with_its_address(serve):
    matcher = flaky(fault=lambda call, batch: (grpc.StatusCode.UNAVAILABLE, "down", ()))
    client = await serve(matcher)
    with pytest.raises(ServiceUnavailableError, match="is the matcher running"):
        await asyncio.to_thread(_run, client, INPUTS[:10], batch_size=4, streams=2)
    assert matcher.calls == 2 * FAST.attempts  # two streams per try, bounded tries


async def test_budget_refusal_reports_the_remaining_allowance(serve):
    trailers = (("breachmatch-budget-remaining", "7"),)
    matcher = flaky(
        fault=lambda call, batch: (
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "daily evaluation budget exhausted", trailers)
            if batch == 2
            else None
        )
    )
    client = await serve(matcher)
    done: dict[bytes, bytes] = {}
    pipeline = OprfPipeline(client, PipelineOptions(batch_size=10, streams=1, backoff=FAST))
    with pytest.raises(BudgetExhaustedError) as refused:
        await asyncio.to_thread(
            pipeline.run, KEY_ID, INPUTS, lambda b, o: done.update(zip(b, o, strict=True))
        )
    assert refused.value.remaining == 7
    assert "7 evaluations remain today" in str(refused.value)
    assert len(done) == 20  # the two batches answered before the refusal were kept
    assert matcher.calls == 1  # a budget refusal is not retried


async def test_retired_key_is_reported_for_a_refresh(serve):
    matcher = flaky(
        fault=lambda call, batch: (grpc.StatusCode.FAILED_PRECONDITION, "key retired", ())
    )
    client = await serve(matcher)
    with pytest.raises(KeyRetiredError, match=KEY_ID):
        await asyncio.to_thread(_run, client, INPUTS[:10])
    assert matcher.calls == 1


async def test_an_invalid_evaluated_element_is_refused(serve):
    client = await serve(flaky(corrupt=True))
    with pytest.raises(RpcFailedError, match="invalid evaluated element"):
        await asyncio.to_thread(_run, client, INPUTS[:10])
