"""Breach events built directly, for tests: genuine ones, and the attacker's.

Ingest publishes breaches through its whole pipeline; tests of the consumers
(matcher, notifier, SDK) need events without a dump — a signed manifest over
an arbitrary body, a signed retraction — and the attack tests need what an
intruder on NATS would publish: an unsigned retraction, a replayed older
manifest, an id of ``..``. `publish_event` puts any of them on stream
BREACHES exactly as a publisher with access to NATS would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime

import nacl.signing
from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.filter import (
    BodySummary,
    FilterParameters,
    Manifest,
    Retraction,
    sign_manifest,
    sign_retraction,
)
from breachmatch.records import Category
from breachmatch.v1 import breach_pb2

DESCRIPTIONS = {
    "da": "Patientjournaler blev kopieret fra klinikkens system.",
    "en": "Patient records were copied from the clinic's system.",
}


def make_manifest(
    breach_id: str,
    body: bytes = b"",
    *,
    version: int = 1,
    title: str = "Alles Lægehus-lækket",
    organisation: str = "Alles Lægehus ApS",
    descriptions: Mapping[str, str] = DESCRIPTIONS,
    breach_date: date = date(2025, 3, 14),
    added_date: date = date(2025, 3, 20),
    oprf_key_id: str = "k-test",
) -> Manifest:
    """The manifest of an empty filter whose body is `body` (its size and digest bind it)."""
    empty = BodySummary(
        entry_count=0,
        parameters=FilterParameters(),
        body_size=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        category_counts=dict.fromkeys(Category.legend(), 0),
    )
    return Manifest.for_body(
        empty,
        breach_id=breach_id,
        version=version,
        title=title,
        organisation=organisation,
        breach_date=breach_date,
        added_date=added_date,
        descriptions=dict(descriptions),
        verified=True,
        sensitive=True,
        oprf_key_id=oprf_key_id,
    )


def publication(manifest: Manifest, signer: nacl.signing.SigningKey) -> breach_pb2.BreachEvent:
    return breach_pb2.BreachEvent(
        kind=breach_pb2.BreachEvent.KIND_PUBLISHED,
        artifact=sign_manifest(manifest, signer).to_artifact(),
        emitted_at=_now(),
    )


def retraction(
    breach_id: str,
    version: int,
    signer: nacl.signing.SigningKey,
    reason: str = "withdrawn in a test",
) -> breach_pb2.BreachEvent:
    signed = sign_retraction(Retraction.now(breach_id, version, reason), signer)
    return breach_pb2.BreachEvent(
        kind=breach_pb2.BreachEvent.KIND_RETRACTED,
        artifact=breach_pb2.BreachArtifact(breach_id=breach_id),
        reason=reason,
        emitted_at=_now(),
        retraction=signed.to_proto(),
    )


def unsigned_retraction(breach_id: str, reason: str = "crafted") -> breach_pb2.BreachEvent:
    """What a retraction looked like before they were signed: an envelope and a reason."""
    return breach_pb2.BreachEvent(
        kind=breach_pb2.BreachEvent.KIND_RETRACTED,
        artifact=breach_pb2.BreachArtifact(breach_id=breach_id),
        reason=reason,
        emitted_at=_now(),
    )


async def store_body(js: JetStreamContext, manifest: Manifest, body: bytes) -> None:
    """Put `body` where the matcher fetches it from (`Manifest.body_object`)."""
    store = await bus.object_store(js, bus.OBJ_BREACH_FILTERS)
    await store.put(manifest.body_object, body)


async def publish_event(js: JetStreamContext, event: breach_pb2.BreachEvent) -> int:
    """Publish `event` on stream BREACHES as any publisher could; its stream sequence."""
    subject = (
        bus.BREACH_RETRACTED
        if event.kind == breach_pb2.BreachEvent.KIND_RETRACTED
        else bus.BREACH_PUBLISHED
    )
    ack = await js.publish(subject, event.SerializeToString(), stream=bus.STREAM_BREACHES)
    return int(ack.seq)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
