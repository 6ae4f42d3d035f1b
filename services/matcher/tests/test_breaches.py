"""Breach distribution: list, download (resumable), retraction, signature checks, watch + resume.

Events are published straight to stream BREACHES, as ingest does, with real
manifests signed by the operator key (and one signed by a stranger). The
watch stream doubles as the synchronisation point: the matcher yields an
event only after applying it to its index, so once a test has seen an event
come back, List/GetBreach reflect it — no sleeping.
"""

from __future__ import annotations

import os
import uuid

import grpc
import grpc.aio
import nacl.signing
import pytest
from prometheus_client import REGISTRY

from breachmatch import bus, keys
from breachmatch.filter import verify_artifact
from breachmatch.v1 import breach_pb2, matcher_pb2
from breachmatch_dev.breach_events import (
    make_manifest,
    publication,
    publish_event,
    retraction,
    store_body,
    unsigned_retraction,
)
from breachmatch_matcher.bodies import CHUNK_SIZE

RPC_TIMEOUT = 20.0
TENANT = "mt-breaches"


async def _publish_breach(
    js, breach_id: str, body: bytes, signer, version: int = 1
) -> tuple[breach_pb2.BreachArtifact, int]:
    manifest = make_manifest(breach_id, body, version=version)
    await store_body(js, manifest, body)
    event = publication(manifest, signer)
    return event.artifact, await publish_event(js, event)


async def _retract(js, breach_id: str, signer, version: int = 1) -> int:
    return await publish_event(js, retraction(breach_id, version, signer))


async def _last_sequence(js) -> int:
    return int((await js.stream_info(bus.STREAM_BREACHES)).state.last_seq)


@pytest.fixture
def operator_key(matcher_files) -> nacl.signing.SigningKey:
    return keys.load_signing_key(matcher_files.keys.signing_key)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _download(stub, breach_id: str, offset: int = 0):
    parts = [p async for p in stub.GetBreach(
        matcher_pb2.GetBreachRequest(breach_id=breach_id, offset=offset), timeout=RPC_TIMEOUT
    )]  # fmt: skip
    assert parts[0].WhichOneof("part") == "artifact"
    assert parts[0].offset == offset
    chunks = parts[1:]
    assert all(p.WhichOneof("part") == "chunk" for p in chunks)
    assert all(len(p.chunk) <= CHUNK_SIZE for p in chunks)
    expected = offset
    for part in chunks:  # offsets are contiguous
        assert part.offset == expected
        expected += len(part.chunk)
    return parts[0].artifact, b"".join(p.chunk for p in chunks)


async def test_publish_download_resume_and_retract(
    matcher, matcher_files, connect, js, operator_key
):
    stub = connect(matcher.port, TENANT)
    start = await _last_sequence(js)
    forged_id, good_id = _unique("forged"), _unique("good")
    body = os.urandom(2 * CHUNK_SIZE + 12345)
    stranger = nacl.signing.SigningKey.generate()
    await _publish_breach(js, forged_id, b"forged body", stranger)
    good, good_seq = await _publish_breach(js, good_id, body, operator_key)

    watch = stub.WatchBreaches(
        matcher_pb2.WatchBreachesRequest(after_sequence=start), timeout=RPC_TIMEOUT
    )
    first = await watch.read()
    # The forged publication came first and was skipped, not forwarded.
    assert (first.sequence, first.event.artifact.breach_id) == (good_seq, good_id)

    listed = (
        await stub.ListBreaches(matcher_pb2.ListBreachesRequest(), timeout=RPC_TIMEOUT)
    ).breaches
    ids = [artifact.breach_id for artifact in listed]
    assert good_id in ids
    assert forged_id not in ids
    missing = stub.GetBreach(matcher_pb2.GetBreachRequest(breach_id=forged_id), timeout=RPC_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await missing.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    artifact, downloaded = await _download(stub, good_id)
    assert artifact == good
    assert downloaded == body
    info = await stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT)
    verify_artifact(artifact, nacl.signing.VerifyKey(info.operator_verify_key))
    cached = list(matcher_files.root.glob("breachmatch-bodies-*/*.body"))

    resume_at = CHUNK_SIZE + 777
    _, rest = await _download(stub, good_id, offset=resume_at)
    assert rest == body[resume_at:]
    _, nothing = await _download(stub, good_id, offset=len(body))
    assert nothing == b""
    beyond = stub.GetBreach(
        matcher_pb2.GetBreachRequest(breach_id=good_id, offset=len(body) + 1), timeout=RPC_TIMEOUT
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await beyond.read()
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE

    retract_seq = await _retract(js, good_id, operator_key)
    retraction = await watch.read()
    assert retraction.sequence == retract_seq
    assert retraction.event.kind == breach_pb2.BreachEvent.KIND_RETRACTED
    watch.cancel()

    listed = (
        await stub.ListBreaches(matcher_pb2.ListBreachesRequest(), timeout=RPC_TIMEOUT)
    ).breaches
    assert good_id not in [a.breach_id for a in listed]
    gone = stub.GetBreach(matcher_pb2.GetBreachRequest(breach_id=good_id), timeout=RPC_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gone.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Its cached body is gone with it.
    assert len(list(matcher_files.root.glob("breachmatch-bodies-*/*.body"))) == len(cached) - 1


async def test_watch_resumes_after_a_disconnect(matcher, connect, js, operator_key):
    stub = connect(matcher.port, TENANT)
    start = await _last_sequence(js)
    ids = [_unique(f"watch{i}") for i in range(5)]
    sequences = {}
    for breach_id in ids[:2]:
        _, sequences[breach_id] = await _publish_breach(js, breach_id, b"body", operator_key)

    first = stub.WatchBreaches(
        matcher_pb2.WatchBreachesRequest(after_sequence=start), timeout=RPC_TIMEOUT
    )
    seen = [await first.read(), await first.read()]
    assert [s.event.artifact.breach_id for s in seen] == ids[:2]
    first.cancel()  # the hospital goes offline ...

    for breach_id in ids[2:4]:  # ... and misses two publications
        _, sequences[breach_id] = await _publish_breach(js, breach_id, b"body", operator_key)

    again = stub.WatchBreaches(
        matcher_pb2.WatchBreachesRequest(after_sequence=seen[-1].sequence), timeout=RPC_TIMEOUT
    )
    missed = [await again.read(), await again.read()]
    assert [(m.sequence, m.event.artifact.breach_id) for m in missed] == [
        (sequences[i], i) for i in ids[2:4]
    ]
    _, sequences[ids[4]] = await _publish_breach(js, ids[4], b"body", operator_key)
    live = await again.read()
    assert (live.sequence, live.event.artifact.breach_id) == (sequences[ids[4]], ids[4])
    assert live.event.kind == breach_pb2.BreachEvent.KIND_PUBLISHED
    again.cancel()


async def test_a_new_matcher_rebuilds_its_index_from_the_stream(
    matcher_files, nats_url, start_matcher, connect, js, operator_key
):
    kept, retracted = _unique("kept"), _unique("retracted")
    await _publish_breach(js, retracted, b"body", operator_key)
    await _retract(js, retracted, operator_key)
    await _publish_breach(js, kept, b"body", operator_key)

    fresh = await start_matcher(matcher_files.config(nats_url, workers=1))
    stub = connect(fresh.port, TENANT)
    listed = (
        await stub.ListBreaches(matcher_pb2.ListBreachesRequest(), timeout=RPC_TIMEOUT)
    ).breaches
    ids = [artifact.breach_id for artifact in listed]
    assert kept in ids
    assert retracted not in ids


async def test_shutdown_ends_watch_streams_cleanly(
    matcher_files, nats_url, start_matcher, connect, js, operator_key
):
    """Watchers must not hold a drain for its full grace: they end with OK and resume elsewhere."""
    app = await start_matcher(matcher_files.config(nats_url, workers=1, drain_seconds=30))
    stub = connect(app.port, TENANT)
    start = await _last_sequence(js)
    breach_id = _unique("shutdown")
    _, sequence = await _publish_breach(js, breach_id, b"body", operator_key)
    watch = stub.WatchBreaches(
        matcher_pb2.WatchBreachesRequest(after_sequence=start), timeout=RPC_TIMEOUT
    )
    assert (await watch.read()).sequence == sequence  # the watch is being served

    await app.stop()
    assert await watch.code() == grpc.StatusCode.OK  # ended, not cancelled at the grace


def _rejected(reason: str) -> float:
    """The matcher's own count of events it refused for `reason` (it runs in this process)."""
    value = REGISTRY.get_sample_value(
        "breachmatch_matcher_breach_events_rejected_total", {"reason": reason}
    )
    return value or 0.0


async def _listed(stub) -> dict[str, breach_pb2.BreachArtifact]:
    reply = await stub.ListBreaches(matcher_pb2.ListBreachesRequest(), timeout=RPC_TIMEOUT)
    return {artifact.breach_id: artifact for artifact in reply.breaches}


async def test_a_correction_supersedes_and_replays_change_nothing(
    matcher, connect, js, operator_key
):
    """v2 replaces v1; a replayed v1, an unsigned or replayed retraction are skipped, not served.

    A sentinel publication after the attacks is the synchronisation point: the
    matcher applies events in order, so once the sentinel comes back on the
    watch, every attack before it was applied (or refused).
    """
    stub = connect(matcher.port, TENANT)
    start = await _last_sequence(js)
    breach_id, sentinel = _unique("corrected"), _unique("sentinel")
    first, _ = await _publish_breach(js, breach_id, b"first body", operator_key, version=1)
    second, second_seq = await _publish_breach(
        js, breach_id, b"corrected body", operator_key, version=2
    )
    watch = stub.WatchBreaches(
        matcher_pb2.WatchBreachesRequest(after_sequence=start), timeout=RPC_TIMEOUT
    )
    assert [(await watch.read()).event.artifact for _ in range(2)] == [first, second]
    assert (await _listed(stub))[breach_id] == second
    _, body = await _download(stub, breach_id)
    assert body == b"corrected body"

    reasons = (
        "replayed_publication",
        "RetractionSignatureError",
        "replayed_retraction",
        "unknown_breach",
    )
    before = {reason: _rejected(reason) for reason in reasons}
    replayed_v1 = breach_pb2.BreachEvent(kind=breach_pb2.BreachEvent.KIND_PUBLISHED, artifact=first)
    await publish_event(js, replayed_v1)  # an older manifest, validly signed
    await publish_event(js, unsigned_retraction(breach_id))
    await _retract(js, breach_id, operator_key, version=1)  # signed, but retracts v1 only
    await publish_event(js, unsigned_retraction(".."))
    await _retract(js, _unique("never-published"), operator_key)
    _, sentinel_seq = await _publish_breach(js, sentinel, b"s", operator_key)
    after = await watch.read()
    assert (after.sequence, after.event.artifact.breach_id) == (sentinel_seq, sentinel)
    assert {reason: _rejected(reason) - before[reason] for reason in reasons} == {
        "replayed_publication": 1,
        "RetractionSignatureError": 2,
        "replayed_retraction": 1,
        "unknown_breach": 1,
    }
    assert (await _listed(stub))[breach_id] == second  # still v2, still served
    _, body = await _download(stub, breach_id)
    assert body == b"corrected body"

    retract_seq = await _retract(js, breach_id, operator_key, version=2)
    retracted = await watch.read()
    assert (retracted.sequence, retracted.event.kind) == (
        retract_seq,
        breach_pb2.BreachEvent.KIND_RETRACTED,
    )
    replayed_v2 = breach_pb2.BreachEvent(
        kind=breach_pb2.BreachEvent.KIND_PUBLISHED, artifact=second
    )
    await publish_event(js, replayed_v2)  # bring the retracted breach back?
    _, sentinel_seq = await _publish_breach(js, _unique("sentinel"), b"s", operator_key)
    assert (await watch.read()).sequence == sentinel_seq
    watch.cancel()
    assert breach_id not in await _listed(stub)
    assert second_seq < retract_seq
