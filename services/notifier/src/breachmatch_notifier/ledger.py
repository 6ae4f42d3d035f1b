"""The outreach ledger: one JetStream KV entry per (tenant, patient ref, breach).

This is what makes "exactly one notice per person per breach" hold across
intake replicas, worker crashes and resubmissions: intake creates the entry
with create-if-absent before anything is queued, workers read it before they
send and write SENT to it (compare-and-set) before they acknowledge the
message. Because every replica shares the bucket, none keeps state of its own.

The ledger must not become a list of patients (docs/architecture.md, promises 2 and 5):

* a key is ``outreach.<tenant>.<breach>.<ref>`` where ``<ref>`` is an
  HMAC-SHA256 of the hospital's (already opaque) patient ref under a key
  derived from the notifier's secret key, so no raw reference ever becomes a
  subject;
* a value holds the state, channel, attempt count, timestamps, breach id,
  that keyed reference and the idempotency key (itself the hospital's opaque
  HMAC), and while a worker holds the entry its claim: a random fencing token,
  the lease's end and the channel's message reference (a Message-ID derived
  from the idempotency key) — never a contact detail.

How workers claim an entry, record their intent before a send and settle it
is `breachmatch_notifier.claims`; this module only stores entries and
compares-and-sets them by KV revision.

Rotating the notifier's secret key changes every keyed reference; the ledger
then no longer recognises earlier submissions, so a rotation must wait until
outreach for the open breaches is complete.

New-breach alerts to tenants use ``alert.<tenant>.<breach>`` in the same
bucket, so an alert is sent once per tenant and breach whichever replica
handles the event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nacl.public
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import OutreachStatus

#: Version 2 added the claim (holder, lease_until, reference); version 1 entries read as unclaimed.
LEDGER_VERSION = 2
_READABLE_VERSIONS = frozenset({1, LEDGER_VERSION})
OUTREACH_PREFIX = "outreach"
ALERT_PREFIX = "alert"
_REF_KEY_CONTEXT = b"breachmatch.notifier.ledger-ref.v1"

QUEUED = "queued"
#: A worker holds the entry (``holder``, until ``lease_until``) and may be sending.
CLAIMED = "claimed"
#: The holder recorded its intent to send over a channel that cannot recognise a repeat.
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
SKIPPED = "skipped"
#: The outcome of a recorded intent is unknown; an operator decides (never resent blindly).
HELD = "held"
#: States after which no worker sends anything for an entry.
TERMINAL = frozenset({SENT, DEAD, SKIPPED, HELD})
_PROTO_STATES: Mapping[str, OutreachStatus.State.ValueType] = {
    QUEUED: OutreachStatus.STATE_QUEUED,
    CLAIMED: OutreachStatus.STATE_QUEUED,
    SENDING: OutreachStatus.STATE_QUEUED,
    SENT: OutreachStatus.STATE_SENT,
    DEAD: OutreachStatus.STATE_DEAD,
    SKIPPED: OutreachStatus.STATE_SKIPPED,
    HELD: OutreachStatus.STATE_HELD,
}


class LedgerConflictError(Exception):
    """The entry changed since it was read: someone else is working on it."""


def now_text() -> str:
    """RFC 3339 UTC, millisecond precision: the ledger's and status events' clock."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ref_key_for(secret_key: nacl.public.PrivateKey) -> bytes:
    """The HMAC key for patient references, derived from (never equal to) the sealing key."""
    return hmac.new(bytes(secret_key), _REF_KEY_CONTEXT, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    state: str
    tenant: str
    breach_id: str
    #: The keyed reference of the patient (hex); empty for alerts.
    ref: str
    idempotency_key: str
    #: 1 for the first submission; +1 each time a dead entry is submitted again.
    round: int = 1
    #: Stream sequence of this round's work-queue message; 0 until the publish is acked.
    queued_seq: int = 0
    attempts: int = 0
    channel: str = ""
    detail: str = ""
    created_at: str = ""
    updated_at: str = ""
    #: Fencing token of the claim that last wrote the entry ("" when unclaimed).
    holder: str = ""
    #: Unix time the holder's lease ends; after it a silent holder counts as gone.
    lease_until: float = 0.0
    #: The channel's own id of the message an intent names (e-mail Message-ID).
    reference: str = ""

    @classmethod
    def new(cls, tenant: str, breach_id: str, ref: str, idempotency_key: str) -> LedgerEntry:
        stamp = now_text()
        return cls(
            QUEUED, tenant, breach_id, ref, idempotency_key, created_at=stamp, updated_at=stamp
        )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def proto_state(self) -> OutreachStatus.State.ValueType:
        return _PROTO_STATES[self.state]

    def evolve(self, **changes: Any) -> LedgerEntry:
        """A copy with ``changes`` applied and ``updated_at`` set to now."""
        return dataclasses.replace(self, updated_at=now_text(), **changes)

    def to_status(self) -> OutreachStatus:
        """The entry as a status; the patient ref is not in the ledger, so it is left empty."""
        return OutreachStatus(
            tenant=self.tenant,
            breach_id=self.breach_id,
            idempotency_key=self.idempotency_key,
            state=self.proto_state,
            channel=self.channel,
            detail=self.detail,
            updated_at=self.updated_at,
        )

    def to_bytes(self) -> bytes:
        # Not `dataclasses.asdict`: it deep-copies every value, a large share of a write's CPU.
        document = {"v": LEDGER_VERSION, **{name: getattr(self, name) for name in _FIELDS}}
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LedgerEntry:
        document = json.loads(data)
        if document.pop("v", None) not in _READABLE_VERSIONS:
            raise ValueError("unsupported ledger entry version")
        return cls(**document)


_FIELDS = tuple(field.name for field in dataclasses.fields(LedgerEntry))


@dataclass(frozen=True, slots=True)
class Versioned:
    """An entry as read (or written) at one KV revision, for compare-and-set."""

    key: str
    entry: LedgerEntry
    revision: int


class Ledger:
    def __init__(self, kv: KeyValue, ref_key: bytes) -> None:
        self._kv = kv
        self._ref_key = ref_key

    def patient_ref(self, tenant: str, patient_ref: str, breach_id: str) -> str:
        """The keyed reference stored in place of the patient ref (64 hex digits)."""
        message = "\x00".join((tenant, patient_ref, breach_id)).encode("utf-8")
        return hmac.new(self._ref_key, message, hashlib.sha256).hexdigest()

    def outreach_key(self, tenant: str, breach_id: str, ref: str) -> str:
        return ".".join(
            (OUTREACH_PREFIX, bus.tenant_token(tenant), bus.tenant_token(breach_id), ref)
        )

    def alert_key(self, tenant: str, breach_id: str) -> str:
        return ".".join((ALERT_PREFIX, bus.tenant_token(tenant), bus.tenant_token(breach_id)))

    async def create(self, key: str, entry: LedgerEntry) -> Versioned | None:
        """Store ``entry`` unless ``key`` exists; None when it did."""
        try:
            revision = await self._kv.create(key, entry.to_bytes())
        except KeyWrongLastSequenceError:
            return None
        return Versioned(key, entry, revision)

    async def get(self, key: str) -> Versioned | None:
        try:
            found = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return Versioned(key, LedgerEntry.from_bytes(found.value or b""), found.revision or 0)

    async def replace(self, current: Versioned, entry: LedgerEntry) -> Versioned:
        """Write ``entry`` if the key is still at ``current.revision``.

        Raises `LedgerConflictError` when it is not.
        """
        try:
            revision = await self._kv.update(current.key, entry.to_bytes(), last=current.revision)
        except KeyWrongLastSequenceError:
            raise LedgerConflictError(current.key) from None
        return Versioned(current.key, entry, revision)

    async def entries(self, tenant: str, breach_id: str = "") -> list[LedgerEntry]:
        """Every outreach entry of ``tenant`` (of one breach when given), as of now."""
        scope = [OUTREACH_PREFIX, bus.tenant_token(tenant)]
        if breach_id:
            scope.append(bus.tenant_token(breach_id))
        return [found.entry for found in await self.scan(".".join([*scope, ">"]))]

    async def scan(self, pattern: str) -> list[Versioned]:
        """Every entry whose key matches ``pattern`` (NATS wildcards), as of now."""
        # nats-py's watcher may send its "initial values done" marker before
        # the values when they reach it during its own consumer-info check, so
        # count the keys first and read until every one of them is in.
        info = await self._kv._js.stream_info(
            self._kv._stream, subjects_filter=self._kv._pre + pattern
        )
        expected = len(info.state.subjects or {})
        watcher = await self._kv.watch(pattern, ignore_deletes=True)
        found: dict[str, Versioned] = {}
        marker_seen = False
        try:
            async for update in watcher:
                if update is None:
                    marker_seen = True
                else:
                    entry = LedgerEntry.from_bytes(update.value or b"")
                    found[update.key] = Versioned(update.key, entry, update.revision or 0)
                if marker_seen and len(found) >= expected:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return list(found.values())
