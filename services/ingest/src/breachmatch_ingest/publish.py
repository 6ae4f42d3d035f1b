"""Announcing and retracting breaches: object store + signed events on stream BREACHES.

Publication is two steps, in this order: the body goes into the object store
``breach-filters`` under a name of its breach id and digest
(`Manifest.body_object`), and its proof index (for the notifier's proofs of
match, `breachmatch.filter.proofs`) under `proof_object_name`; then a signed
`BreachEvent` (KIND_PUBLISHED) goes to ``breachmatch.breach.published``. The
matcher and the notifier follow the stream, so objects without an event are
invisible and an event is only emitted once its objects are in place.

Every publication of a breach id has a version (`Manifest.version`): the
stream is replayed first (it holds one event per announcement, so it is
small) and checked the way every consumer checks it (signatures, then
`breachmatch.filter.lifecycle`, so an event someone slipped onto the stream
counts for nothing here either). Then:

* nothing published yet under the id: version 1;
* the newest publication has exactly this manifest — same metadata, same
  body — apart from its version: nothing is published (``already_published``),
  which is what makes a re-ingest or a resumed job safe to run;
* anything changed (a corrected organisation, a description, a new dump):
  the next version, keeping the first publication's ``added_date`` (the day
  the breach was added, which notices state). Consumers then serve only the
  new version; the stream keeps both, and so does the object store;
* the id was retracted: refused (`BreachRetractedError`), since hospitals
  were told it was withdrawn; a corrected dump gets a new breach id.

Versions must never fork, so an event is published with
``Nats-Expected-Last-Sequence`` set to the stream's last sequence at the
replay: if another publisher got in between (or an earlier try whose ack was
lost did land), the server refuses it and the whole decision is made again on
the new history (bounded). No dedup id is needed for that, and none is used:
one planted on the stream could otherwise block a real publication.

Retraction is a signed event too (KIND_RETRACTED with a `Retraction` naming
the newest version, its reason and time), published the same way. The body
is *kept* in the object store
— the operator may need it for the incident record, and it holds only tags
and encrypted labels — but no consumer serves a retracted breach.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from io import BufferedIOBase

import nacl.signing
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, NotFoundError
from nats.js.object_store import ObjectStore

from breachmatch import bus, logs
from breachmatch.filter import (
    BreachEventError,
    BreachVersions,
    Manifest,
    Retraction,
    proof_object_name,
    read_breach_event,
    sign_manifest,
    sign_retraction,
)
from breachmatch.filter.retraction import check_reason
from breachmatch.v1.breach_pb2 import BreachArtifact, BreachEvent

log = logs.get_logger(__name__)

#: How long to wait for each message while replaying the (small) BREACHES stream.
_REPLAY_TIMEOUT = 10.0
#: Publishers racing for one stream position: decide again this often, then give up.
_PUBLISH_TRIES = 5
#: JetStream's "wrong last sequence" error codes.
_WRONG_LAST_SEQUENCE = (10071, 10164)


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


class PublishContentionError(RuntimeError):
    """Other publishers kept moving the stream; nothing was published."""


@dataclass(frozen=True)
class Publication:
    outcome: PublishOutcome
    #: The version now published for the breach (the existing one if already published).
    version: int


@dataclass
class BreachHistory:
    """Stream BREACHES as every consumer sees it: checked, versioned, newest manifest per id."""

    versions: BreachVersions = field(default_factory=BreachVersions)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    last_sequence: int = 0

    def apply(self, sequence: int, data: bytes, verify_key: nacl.signing.VerifyKey) -> None:
        try:
            checked = read_breach_event(data, verify_key)
            self.versions.admit(checked)
        except BreachEventError as exc:
            log.warning("breach event ignored", sequence=sequence, reason=exc.reason)
            return
        if checked.manifest is not None:
            self.manifests[checked.breach_id] = checked.manifest


def _object_digest(sha256_hex: str) -> str:
    """A SHA-256 in the object store's notation (``SHA-256=<base64url>``)."""
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def _emitted_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def replay_events(js: JetStreamContext) -> list[tuple[int, bytes]]:
    """Every event on stream BREACHES as (sequence, bytes), oldest first, unchecked."""
    await bus.ensure_streams(js, bus.STREAM_BREACHES)
    info = await js.stream_info(bus.STREAM_BREACHES)
    events: list[tuple[int, bytes]] = []
    if not info.state.messages:
        return events
    last_seq = int(info.state.last_seq)
    sub = await js.subscribe(bus.BREACH_EVENTS, stream=bus.STREAM_BREACHES, ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=_REPLAY_TIMEOUT)
            sequence = int(msg.metadata.sequence.stream)
            events.append((sequence, msg.data))
            if sequence >= last_seq:
                return events
    finally:
        await sub.unsubscribe()


async def breach_history(js: JetStreamContext, verify_key: nacl.signing.VerifyKey) -> BreachHistory:
    """Stream BREACHES checked and applied oldest first, with the sequence it ended at."""
    await bus.ensure_streams(js, bus.STREAM_BREACHES)
    info = await js.stream_info(bus.STREAM_BREACHES)
    events = await replay_events(js) if info.state.messages else []
    history = BreachHistory(last_sequence=events[-1][0] if events else int(info.state.last_seq))
    for sequence, data in events:
        history.apply(sequence, data, verify_key)
    return history


async def _store_body(store: ObjectStore, manifest: Manifest, body: bytes | BufferedIOBase) -> None:
    """Put the body under its content name, unless an intact copy is already there."""
    with contextlib.suppress(NotFoundError):
        info = await store.get_info(manifest.body_object)
        if info.size == manifest.body_size and info.digest == _object_digest(manifest.body_sha256):
            return
    if not isinstance(body, bytes):
        body.seek(0)
    await store.put(manifest.body_object, body)


def next_manifest(history: BreachHistory, draft: Manifest) -> Manifest | None:
    """The manifest to publish for `draft` after `history`; None when it is already published."""
    standing = history.versions.get(draft.breach_id)
    if standing is not None and standing.retracted:
        raise BreachRetractedError(
            f"breach {draft.breach_id} was retracted; publish the corrected dump under a new "
            "breach id"
        )
    previous = history.manifests.get(draft.breach_id)
    if previous is None:
        return dataclasses.replace(draft, version=1)
    same = dataclasses.replace(draft, version=previous.version, added_date=previous.added_date)
    if same == previous:
        return None
    return dataclasses.replace(same, version=previous.version + 1)


async def _publish_event(
    js: JetStreamContext, subject: str, event: BreachEvent, after: int
) -> bool:
    """Publish `event` if the stream still ends at `after`; False if it moved on."""
    try:
        await js.publish(
            subject,
            event.SerializeToString(),
            stream=bus.STREAM_BREACHES,
            headers={Header.EXPECTED_LAST_SEQUENCE: str(after)},
        )
    except APIError as error:
        if error.err_code in _WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


async def _store_proof_index(
    store: ObjectStore, name: str, proof_index: bytes | BufferedIOBase
) -> None:
    """Put the proof index under `name`, unless it is there: its name holds the body's digest."""
    with contextlib.suppress(NotFoundError):
        await store.get_info(name)
        return
    if not isinstance(proof_index, bytes):
        proof_index.seek(0)
    await store.put(name, proof_index)


async def publish_artifact(
    js: JetStreamContext,
    draft: Manifest,
    body: bytes | BufferedIOBase,
    proof_index: bytes | BufferedIOBase,
    signing_key: nacl.signing.SigningKey,
) -> Publication:
    """Store body and proof index and announce `draft` as the breach's next version,
    unless nothing changed.

    Both may be seekable files (a large filter is never held in memory); they
    are read from their start. The proof index is stored even when nothing is
    announced, so a breach published before proof indexes existed gets one
    on re-ingest.
    """
    store = await bus.object_store(js, bus.OBJ_BREACH_FILTERS)
    await _store_proof_index(store, proof_object_name(draft), proof_index)
    for _ in range(_PUBLISH_TRIES):
        history = await breach_history(js, signing_key.verify_key)
        manifest = next_manifest(history, draft)
        if manifest is None:
            return Publication(
                PublishOutcome.ALREADY_PUBLISHED, history.manifests[draft.breach_id].version
            )
        await _store_body(store, manifest, body)
        event = BreachEvent(
            kind=BreachEvent.KIND_PUBLISHED,
            artifact=sign_manifest(manifest, signing_key).to_artifact(),
            emitted_at=_emitted_at(),
        )
        if await _publish_event(js, bus.BREACH_PUBLISHED, event, history.last_sequence):
            log.info(
                "breach published",
                breach_id=manifest.breach_id,
                version=manifest.version,
                entries=manifest.entry_count,
                body_size=manifest.body_size,
            )
            return Publication(PublishOutcome.PUBLISHED, manifest.version)
    raise PublishContentionError("the breach stream kept changing while publishing; run again")


async def retract_breach(
    js: JetStreamContext, breach_id: str, reason: str, signing_key: nacl.signing.SigningKey
) -> RetractOutcome:
    """Announce, signed, that `breach_id` is withdrawn; every consumer stops serving it.

    A reason the statement could not carry raises `RetractionFormatError` first.
    """
    check_reason(reason)
    for _ in range(_PUBLISH_TRIES):
        history = await breach_history(js, signing_key.verify_key)
        standing = history.versions.get(breach_id)
        if standing is None:
            raise UnknownBreachError("no breach with this id was published")
        if standing.retracted:
            return RetractOutcome.ALREADY_RETRACTED
        signed = sign_retraction(Retraction.now(breach_id, standing.version, reason), signing_key)
        event = BreachEvent(
            kind=BreachEvent.KIND_RETRACTED,
            artifact=BreachArtifact(breach_id=breach_id),
            reason=reason,
            emitted_at=_emitted_at(),
            retraction=signed.to_proto(),
        )
        if await _publish_event(js, bus.BREACH_RETRACTED, event, history.last_sequence):
            log.info("breach retracted", breach_id=breach_id, version=standing.version)
            return RetractOutcome.RETRACTED
    raise PublishContentionError("the breach stream kept changing while retracting; run again")
