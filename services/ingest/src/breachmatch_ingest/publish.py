"""Announcing and retracting breaches: object store + events on stream BREACHES.

Publication is two steps, in this order: the body goes into the object store
``breach-filters`` under the breach id, and its proof index (for the
notifier's proofs of match, `breachmatch.filter.proofs`) under
``proofs.<body sha256>``; then a signed `BreachEvent` (KIND_PUBLISHED) goes to
``breachmatch.breach.published``. The matcher and the notifier follow the
stream, so objects without an event are invisible and an event is only
emitted once its objects are in place.

Publishing is idempotent, which is what makes a re-ingest or a resumed job
safe to run:

* the stream is read first (it holds one event per announcement, so it is
  small): when the breach's latest event already announces a body with the
  same SHA-256, nothing is published again;
* the body is written only when the stored one has a different digest (the
  proof index only when it is missing: its name holds the body's digest, and
  the same body always has the same index);
* the event carries the dedup id ``published:<breach id>:<body sha256>``,
  so even two coordinators racing past the first check yield one event
  (within the stream's seven-day duplicate window).

Retraction is an event too (KIND_RETRACTED, reason, dedup id
``retracted:<breach id>``). The body is *kept* in the object store — the
operator may need it for the incident record, and it holds only tags and
encrypted labels — but the matcher stops serving a breach whose latest event
is a retraction. A retracted breach id is final: publishing it again is
refused (`BreachRetractedError`), since hospitals were told it was withdrawn;
a corrected dump gets a new breach id.
"""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime
from enum import StrEnum
from io import BufferedIOBase

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from breachmatch import bus, logs
from breachmatch.filter import Manifest, SignedManifest, proof_object_name
from breachmatch.v1.breach_pb2 import BreachArtifact, BreachEvent

log = logs.get_logger(__name__)

_DEDUP_HEADER = "Nats-Msg-Id"
#: How long to wait for each message while replaying the (small) BREACHES stream.
_REPLAY_TIMEOUT = 10.0


class PublishOutcome(StrEnum):
    PUBLISHED = "published"
    ALREADY_PUBLISHED = "already_published"


class RetractOutcome(StrEnum):
    RETRACTED = "retracted"
    ALREADY_RETRACTED = "already_retracted"


class BreachRetractedError(RuntimeError):
    """The breach id was retracted; it cannot be published again."""


class UnknownBreachError(LookupError):
    """No event was ever published for the breach id."""


def _emitted_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _object_digest(sha256_hex: str) -> str:
    """A SHA-256 in the object store's notation (``SHA-256=<base64url>``)."""
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


async def replay_events(js: JetStreamContext) -> list[BreachEvent]:
    """Every event on stream BREACHES, oldest first."""
    await bus.ensure_streams(js, bus.STREAM_BREACHES)
    info = await js.stream_info(bus.STREAM_BREACHES)
    events: list[BreachEvent] = []
    if not info.state.messages:
        return events
    last_seq = info.state.last_seq
    sub = await js.subscribe(bus.BREACH_EVENTS, stream=bus.STREAM_BREACHES, ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=_REPLAY_TIMEOUT)
            events.append(BreachEvent.FromString(msg.data))
            if msg.metadata.sequence.stream >= last_seq:
                return events
    finally:
        await sub.unsubscribe()


async def latest_events(js: JetStreamContext) -> dict[str, BreachEvent]:
    """The latest event of every breach id."""
    return {event.artifact.breach_id: event for event in await replay_events(js)}


def _announces(event: BreachEvent | None, body_sha256: str) -> bool:
    if event is None or event.kind != BreachEvent.KIND_PUBLISHED:
        return False
    return Manifest.from_bytes(event.artifact.manifest).body_sha256 == body_sha256


async def _store_body(
    store: ObjectStore, breach_id: str, body: bytes | BufferedIOBase, sha256_hex: str
) -> None:
    with contextlib.suppress(NotFoundError):
        if (await store.get_info(breach_id)).digest == _object_digest(sha256_hex):
            return
    if not isinstance(body, bytes):
        body.seek(0)
    await store.put(breach_id, body)


async def _store_proof_index(
    store: ObjectStore, name: str, proof_index: bytes | BufferedIOBase
) -> None:
    with contextlib.suppress(NotFoundError):
        await store.get_info(name)
        return
    if not isinstance(proof_index, bytes):
        proof_index.seek(0)
    await store.put(name, proof_index)


async def publish_artifact(
    js: JetStreamContext,
    signed: SignedManifest,
    body: bytes | BufferedIOBase,
    proof_index: bytes | BufferedIOBase,
) -> PublishOutcome:
    """Store body and proof index and announce them, unless this body is already announced.

    Both may be seekable files (a large filter is never held in memory); they
    are read from their start.
    """
    manifest = signed.manifest
    latest = (await latest_events(js)).get(manifest.breach_id)
    if latest is not None and latest.kind == BreachEvent.KIND_RETRACTED:
        raise BreachRetractedError("this breach id was retracted; use a new breach id")
    store = await bus.object_store(js, bus.OBJ_BREACH_FILTERS)
    await _store_body(store, manifest.breach_id, body, manifest.body_sha256)
    await _store_proof_index(store, proof_object_name(manifest), proof_index)
    if _announces(latest, manifest.body_sha256):
        return PublishOutcome.ALREADY_PUBLISHED
    event = BreachEvent(
        kind=BreachEvent.KIND_PUBLISHED,
        artifact=signed.to_artifact(),
        emitted_at=_emitted_at(),
    )
    ack = await js.publish(
        bus.BREACH_PUBLISHED,
        event.SerializeToString(),
        stream=bus.STREAM_BREACHES,
        headers={_DEDUP_HEADER: f"published:{manifest.breach_id}:{manifest.body_sha256}"},
    )
    if ack.duplicate:
        return PublishOutcome.ALREADY_PUBLISHED
    log.info(
        "breach published",
        breach_id=manifest.breach_id,
        entries=manifest.entry_count,
        body_size=manifest.body_size,
    )
    return PublishOutcome.PUBLISHED


async def retract_breach(js: JetStreamContext, breach_id: str, reason: str) -> RetractOutcome:
    """Announce that `breach_id` is withdrawn; the matcher stops serving it."""
    latest = (await latest_events(js)).get(breach_id)
    if latest is None:
        raise UnknownBreachError("no breach with this id was published")
    if latest.kind == BreachEvent.KIND_RETRACTED:
        return RetractOutcome.ALREADY_RETRACTED
    event = BreachEvent(
        kind=BreachEvent.KIND_RETRACTED,
        artifact=BreachArtifact(breach_id=breach_id),
        reason=reason,
        emitted_at=_emitted_at(),
    )
    ack = await js.publish(
        bus.BREACH_RETRACTED,
        event.SerializeToString(),
        stream=bus.STREAM_BREACHES,
        headers={_DEDUP_HEADER: f"retracted:{breach_id}"},
    )
    if ack.duplicate:
        return RetractOutcome.ALREADY_RETRACTED
    log.info("breach retracted", breach_id=breach_id)
    return RetractOutcome.RETRACTED
