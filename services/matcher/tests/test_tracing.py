"""Traces through the matcher: the SDK's gRPC calls and the breach events it consumes.

The matcher runs in this process (the shared `matcher` fixture), so its spans
and the SDK's land in the same provider: the real OpenTelemetry SDK with its
in-memory exporter (`spans`, root conftest). The calls go over the SDK's own
channel (`breachmatch.client.connection.open_channel`) with real mTLS.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import nacl.signing
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from breachmatch import keys, oprf
from breachmatch.client.connection import Endpoint, load_identity, open_channel
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_dev.breach_events import make_manifest, publication, publish_event, store_body

TENANT = "mt-tracing"
RPC_TIMEOUT = 20.0
GET_KEY_INFO = "breachmatch.v1.Matcher/GetKeyInfo"
EVALUATE = "breachmatch.v1.Matcher/Evaluate"


def _sdk_stub(matcher, matcher_files) -> tuple[grpc.Channel, matcher_pb2_grpc.MatcherStub]:
    tenant_dir = matcher_files.pki.tenant_dir(TENANT)
    endpoint = Endpoint("matcher", f"localhost:{matcher.port}", "--matcher", tenant_dir)
    channel = open_channel(endpoint, load_identity(tenant_dir))
    return channel, matcher_pb2_grpc.MatcherStub(channel)


def _both(*names: str) -> Callable[[tuple[ReadableSpan, ...]], bool]:
    """Whether a CLIENT and a SERVER span of each of `names` have ended."""

    def ended(finished: tuple[ReadableSpan, ...]) -> bool:
        kinds = {(s.name, s.kind) for s in finished}
        return all({(n, SpanKind.CLIENT), (n, SpanKind.SERVER)} <= kinds for n in names)

    return ended


def _pair(finished: tuple[ReadableSpan, ...], name: str) -> tuple[ReadableSpan, ReadableSpan]:
    """The one CLIENT and the one SERVER span named `name`."""
    client = [s for s in finished if s.name == name and s.kind is SpanKind.CLIENT]
    server = [s for s in finished if s.name == name and s.kind is SpanKind.SERVER]
    assert (len(client), len(server)) == (1, 1), [(s.name, s.kind) for s in finished]
    return client[0], server[0]


def _continues(server: ReadableSpan, client: ReadableSpan) -> bool:
    assert server.context is not None
    assert client.context is not None
    return (
        server.context.trace_id == client.context.trace_id
        and server.parent is not None
        and server.parent.span_id == client.context.span_id
    )


async def test_an_sdk_call_and_the_matchers_handling_are_one_trace(matcher, matcher_files, spans):
    channel, stub = _sdk_stub(matcher, matcher_files)

    def calls() -> int:
        key_id = stub.GetKeyInfo(
            matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT
        ).current_key_id
        _, elements = oprf.blind_batch([b"tracing:%d" % i for i in range(4)])
        request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
        return sum(
            len(r.evaluated_elements) for r in stub.Evaluate(iter([request]), timeout=RPC_TIMEOUT)
        )

    try:
        assert await asyncio.to_thread(calls) == 4
    finally:
        channel.close()
    finished = await asyncio.to_thread(spans.wait_for, _both(EVALUATE, GET_KEY_INFO))
    for name in (GET_KEY_INFO, EVALUATE):
        client, server = _pair(finished, name)
        assert _continues(server, client), name
        assert server.attributes is not None
        assert client.attributes is not None
        assert server.attributes["breachmatch.tenant"] == TENANT
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert client.attributes["rpc.grpc.status_code"] == 0
        assert server.attributes["rpc.service"] == "breachmatch.v1.Matcher"
        assert server.status.status_code is StatusCode.UNSET


async def test_a_refused_call_is_traced_with_its_code_and_nothing_it_carried(
    matcher, matcher_files, spans
):
    """An Evaluate under a key id the matcher never had: both sides record the code."""
    channel, stub = _sdk_stub(matcher, matcher_files)
    bogus = "not-a-key-" + uuid.uuid4().hex

    def refused() -> grpc.StatusCode:
        _, elements = oprf.blind_batch([b"tracing:refused"])
        request = matcher_pb2.EvaluateRequest(key_id=bogus, blinded_elements=elements)
        with pytest.raises(grpc.RpcError) as refusal:
            list(stub.Evaluate(iter([request]), timeout=RPC_TIMEOUT))
        return refusal.value.code()

    try:
        code = await asyncio.to_thread(refused)
    finally:
        channel.close()
    client, server = _pair(await asyncio.to_thread(spans.wait_for, _both(EVALUATE)), EVALUATE)
    assert _continues(server, client)
    for span in (client, server):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == code.value[0] != 0
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description is None  # the refusal's details stay out
        assert span.events == ()  # no recorded exception, no message
        assert bogus not in repr(dict(span.attributes))


async def test_a_published_breach_event_and_its_application_are_one_trace(
    matcher, matcher_files, js, spans
):
    signer = keys.load_signing_key(matcher_files.keys.signing_key)
    assert isinstance(signer, nacl.signing.SigningKey)
    breach_id = f"traced-{uuid.uuid4().hex[:12]}"
    manifest = make_manifest(breach_id, b"traced body")
    await store_body(js, manifest, b"traced body")
    sequence = await publish_event(js, publication(manifest, signer))

    # The matcher yields an event on a watch only after applying it.
    credentials = matcher_files.credentials(TENANT)
    async with grpc.aio.secure_channel(f"localhost:{matcher.port}", credentials) as channel:
        watch: Any = matcher_pb2_grpc.MatcherStub(channel).WatchBreaches(
            matcher_pb2.WatchBreachesRequest(after_sequence=sequence - 1), timeout=RPC_TIMEOUT
        )
        assert (await watch.read()).event.artifact.breach_id == breach_id
        watch.cancel()

    finished = spans.finished()
    sent = [s for s in finished if s.kind is SpanKind.PRODUCER and s.name == "send BREACHES"]
    applied = [s for s in finished if s.kind is SpanKind.CONSUMER and s.name == "process BREACHES"]
    assert len(sent) == 1
    assert sent[0].context is not None
    trace_id = sent[0].context.trace_id
    assert [s for s in applied if s.context is not None and s.context.trace_id == trace_id]
    assert all(s.attributes and s.attributes["messaging.system"] == "nats" for s in sent)


@pytest.mark.parametrize(
    ("exporter", "exported"), [(None, True), ("none", False)], ids=["endpoint-set", "exporter-none"]
)
async def test_a_matcher_process_exports_exactly_when_configured_to(
    exporter, exported, otlp_receiver, monkeypatch, matcher_files, nats_url, spawn_matcher,
    connect, key_info,
):  # fmt: skip
    """The real ``breachmatch-matcher serve`` with a collector endpoint in its environment:
    it exports its spans there (flushed at exit), unless OTEL_TRACES_EXPORTER=none."""
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        if exporter is not None:
            monkeypatch.setenv("OTEL_TRACES_EXPORTER", exporter)
        process = await spawn_matcher(matcher_files.config(nats_url))
        await key_info(connect(process.grpc_port, TENANT))
        process.terminate()
        assert await process.exit_code() == 0
    served = [
        s for s in receiver.spans()
        if s.service == "breachmatch-matcher" and s.span.name == GET_KEY_INFO
    ]  # fmt: skip
    if exported:
        assert len(served) == 1
        assert served[0].kind == "SPAN_KIND_SERVER"
    else:
        assert receiver.bodies == []
