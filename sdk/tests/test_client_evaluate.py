"""The VOPRF pipeline against a real mTLS gRPC server that evaluates for real but misbehaves on cue.

The servicer below is a Matcher in miniature: it evaluates and proves with a
real VOPRF key (so every output can be checked against `oprf.evaluate`),
counts what it receives, and can be told to fail a call the way a real
matcher or network does — UNAVAILABLE mid-stream, RESOURCE_EXHAUSTED with the
remaining budget in the trailers, FAILED_PRECONDITION for a retired key — or
to lie: answer a batch, or one element of it, under another key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
from numpy.typing import NDArray

from breachmatch import oprf, voprf
from breachmatch.client.audit import SecurityAudit
from breachmatch.client.connection import Endpoint, load_identity, open_channel
from breachmatch.client.errors import (
    BudgetExhaustedError,
    KeyRetiredError,
    ServiceUnavailableError,
    UnverifiableEvaluationError,
)
from breachmatch.client.evaluate import STREAM_DEPTH, OprfPipeline, PipelineOptions
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.client.matcher import MatcherClient
from breachmatch.client.retry import Backoff
from breachmatch.server import ServerConfig, Service
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_dev import DevPki

KEY_ID = "k-test"
FAST = Backoff(initial=0.01, maximum=0.05, attempts=4)
INPUTS = [f"breachmatch:v1:email:p{i}@example.dk".encode() for i in range(200)]

#: Decides, per (call number, batch number within the call), what to do instead of answering.
Fault = Callable[[int, int], tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None]
#: Decides, per batch number (over all calls), how to lie about it: None, "batch" (all of
#: it under another key, proven under that key), "element" (one element under another
#: key, the honest proof), "no-proof" or "invalid-element".
Lie = Callable[[int], str | None]
OTHER_SECRET, OTHER_PUBLIC = oprf.random_key_pair()


@dataclass
class FlakyMatcher(matcher_pb2_grpc.MatcherServicer):
    secret: bytes = field(default_factory=lambda: oprf.random_key_pair()[0])
    key_info_failures: int = 0
    fault: Fault = lambda call, batch: None
    lie: Lie = lambda batch: None
    received: int = 0
    calls: int = 0
    batches: int = 0

    @property
    def key(self) -> TrustedOprfKey:
        return TrustedOprfKey(KEY_ID, oprf.public_key(self.secret))

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
            yield self._answer(request, self.lie(self.batches))
            self.batches += 1
            batch += 1

    def _answer(
        self, request: matcher_pb2.EvaluateRequest, lie: str | None
    ) -> matcher_pb2.EvaluateResponse:
        blinded = list(request.blinded_elements)
        if lie == "batch":
            evaluated, proof = voprf.blind_evaluate_batch(OTHER_SECRET, OTHER_PUBLIC, blinded)
        else:
            evaluated, proof = voprf.blind_evaluate_batch(self.secret, self.key.public_key, blinded)
        if lie == "element":
            evaluated[len(evaluated) // 2] = oprf.blind_evaluate(
                OTHER_SECRET, blinded[len(blinded) // 2]
            )
        elif lie == "no-proof":
            proof = b""
        elif lie == "invalid-element":
            evaluated[0] = bytes(32)
        elif lie == "short-element":  # with the next one's first byte, still 64 bytes in all
            evaluated[0], evaluated[1] = evaluated[0][:-1], evaluated[0][-1:] + evaluated[1]
        return matcher_pb2.EvaluateResponse(
            key_id=request.key_id,
            evaluated_elements=evaluated,
            batch_id=request.batch_id,
            proof=proof,
        )


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


@pytest.fixture
def audit(tmp_path: Path) -> SecurityAudit:
    return SecurityAudit(tmp_path / "audit.jsonl")


def _run(
    client: MatcherClient,
    matcher: FlakyMatcher,
    inputs: list[bytes],
    done: dict[bytes, bytes] | None = None,
    audit: SecurityAudit | None = None,
    **options: Any,
) -> tuple[dict[bytes, bytes], int]:
    """Run the pipeline under the matcher's stated key; `done` collects what was checkpointed."""
    done = {} if done is None else done

    def on_batch(batch: Any, outputs: NDArray[np.uint8]) -> None:
        assert not set(batch) & set(done), "a batch was checkpointed twice"
        done.update(zip(batch, map(bytes, outputs), strict=True))

    used = audit or SecurityAudit(Path(os.devnull))
    pipeline = OprfPipeline(client, PipelineOptions(backoff=FAST, **options), used)
    sent = pipeline.run(matcher.key, inputs, on_batch)
    return done, sent


async def test_outputs_equal_the_unblinded_prf_with_several_streams(serve):
    matcher = flaky()
    client = await serve(matcher)
    done, sent = await asyncio.to_thread(_run, client, matcher, INPUTS, batch_size=16, streams=3)
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
    done, sent = await asyncio.to_thread(_run, client, matcher, INPUTS, batch_size=16, streams=1)
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
        await asyncio.to_thread(_run, client, matcher, INPUTS[:10], batch_size=4, streams=2)
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
    with pytest.raises(BudgetExhaustedError) as refused:
        await asyncio.to_thread(_run, client, matcher, INPUTS, done, batch_size=10, streams=1)
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
        await asyncio.to_thread(_run, client, matcher, INPUTS[:10])
    assert matcher.calls == 1


@pytest.mark.parametrize(
    "lie", ["batch", "element", "no-proof", "invalid-element", "short-element"]
)
async def test_a_lying_batch_is_refused_audited_and_none_of_it_kept(serve, audit, lie):
    """Batches 0-2 are honest, batch 3 lies: the run stops, and only honest batches were kept."""
    matcher = flaky(lie=lambda batch: lie if batch == 3 else None)
    client = await serve(matcher)
    done: dict[bytes, bytes] = {}
    with pytest.raises(
        UnverifiableEvaluationError,
        match=f"matcher returned an unverifiable evaluation for key {KEY_ID}",
    ):
        await asyncio.to_thread(
            _run, client, matcher, INPUTS, done, audit, batch_size=10, streams=1
        )
    lying_batch = set(INPUTS[30:40])
    assert not lying_batch & set(done)
    assert len(done) == 30
    assert done == {data: oprf.evaluate(matcher.secret, data) for data in done}
    [event] = audit.events()
    assert event["event"] == "unverifiable_evaluation"
    assert event["key_id"] == KEY_ID
    assert event["batch_elements"] == 10
    assert matcher.calls == 1  # a lie is not retried


async def test_a_large_run_finalizes_in_worker_processes_and_refuses_a_lie_there(serve, audit):
    """Enough inputs for worker processes: outputs are the PRF's, and a lie crosses the pipe."""
    inputs = [b"large:%d" % i for i in range(oprf.PARALLEL_THRESHOLD + 100)]
    matcher = flaky(lie=lambda batch: "element" if batch == 20 else None)
    client = await serve(matcher)
    done: dict[bytes, bytes] = {}
    with pytest.raises(UnverifiableEvaluationError, match=KEY_ID):
        await asyncio.to_thread(
            _run, client, matcher, inputs, done, audit, batch_size=64, streams=1, workers=2
        )
    # One stream (so that the matcher numbers batches in order): batches 0-19 were kept.
    assert done == {data: oprf.evaluate(matcher.secret, data) for data in inputs[: 20 * 64]}
    [event] = audit.events()
    assert event["batch_elements"] == 64


async def test_a_proof_under_an_unstated_key_is_refused(serve, audit):
    """An honest matcher, but the client holds another stated key for the id: nothing is kept."""
    matcher = flaky()
    client = await serve(matcher)
    done: dict[bytes, bytes] = {}
    stated = TrustedOprfKey(KEY_ID, OTHER_PUBLIC)
    pipeline = OprfPipeline(client, PipelineOptions(backoff=FAST, batch_size=10), audit)
    with pytest.raises(UnverifiableEvaluationError, match=KEY_ID):
        await asyncio.to_thread(
            pipeline.run, stated, INPUTS[:20], lambda b, o: done.update(zip(b, o, strict=True))
        )
    assert done == {}
