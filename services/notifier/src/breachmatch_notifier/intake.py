"""Outreach intake: check a tenant's batch, record it in the ledger, queue it durably.

For each item, the ledger entry for (tenant, patient ref, breach) is created
*before* the request is published, so whichever replica, retry or idempotency
key comes second finds it and queues nothing: one notice per person per breach.
The publish waits for the stream's ack, and the call returns only when every
accepted item is stored; a batch that fails halfway can simply be sent again.

An entry that exists is re-queued in two cases only, both of which send no
second notice:

* its publish was never confirmed (``queued_seq`` is 0: the replica died
  between ledger and queue, or NATS failed mid-batch) — published again under
  the same message id, so the stream drops it if the first one did land;
* it is dead (never delivered): submitting it again starts a new round, with
  the entry's original idempotency key so channel message ids stay stable.

The sealed contact is not opened here; only its size is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from nats.js import JetStreamContext

from breachmatch import logs, refusals
from breachmatch.filter import is_breach_id
from breachmatch.v1.outreach_pb2 import OutreachItem, OutreachReceipt, OutreachStatus
from breachmatch_notifier import metrics
from breachmatch_notifier.breaches import BreachCatalogue
from breachmatch_notifier.channels import message_uuid
from breachmatch_notifier.config import MAX_SEALED_CONTACT_BYTES
from breachmatch_notifier.ledger import (
    DEAD,
    QUEUED,
    Ledger,
    LedgerConflictError,
    LedgerEntry,
    Versioned,
)
from breachmatch_notifier.queue import publish_request
from breachmatch_notifier.status import StatusEvents, status_for

log = logs.get_logger(__name__)

#: nacl SealedBox overhead: ephemeral public key (32) and MAC (16).
SEAL_OVERHEAD = 48
MAX_PATIENT_REF_LENGTH = 256
#: How often one item's ledger entry may change under us before the call gives up.
_LEDGER_TRIES = 3


class IntakeError(Exception):
    """The batch is refused as a whole; messages name the item, never contact data."""


class InvalidItemError(IntakeError):
    pass


class UnknownBreachError(IntakeError):
    state = refusals.UNKNOWN


class RetractedBreachError(IntakeError):
    state = refusals.RETRACTED


class Intake:
    def __init__(
        self,
        js: JetStreamContext,
        ledger: Ledger,
        statuses: StatusEvents,
        catalogue: BreachCatalogue,
        max_batch: int,
    ) -> None:
        self._js = js
        self._ledger = ledger
        self._statuses = statuses
        self._catalogue = catalogue
        self._max_batch = max_batch

    async def submit(self, tenant: str, items: Sequence[OutreachItem]) -> list[OutreachReceipt]:
        """Receipts in item order; raises `IntakeError` before anything is stored."""
        self._check(items)
        first_of: dict[str, int] = {}
        refs: list[str] = []
        for index, item in enumerate(items):
            ref = self._ledger.patient_ref(tenant, item.patient_ref, item.breach_id)
            refs.append(ref)
            first_of.setdefault(ref, index)
        unique = sorted(first_of.values())
        outcomes = await asyncio.gather(
            *(self._submit_one(tenant, items[index], refs[index]) for index in unique)
        )
        accepted = dict(zip(unique, outcomes, strict=True))
        receipts = []
        for index, item in enumerate(items):
            fresh = accepted.get(index, False)
            metrics.OUTREACH_SUBMITTED.labels(tenant, "accepted" if fresh else "duplicate").inc()
            receipts.append(OutreachReceipt(idempotency_key=item.idempotency_key, accepted=fresh))
        log.info(
            "outreach submitted",
            items=len(items),
            accepted=sum(receipt.accepted for receipt in receipts),
        )
        return receipts

    def _check(self, items: Sequence[OutreachItem]) -> None:
        if len(items) > self._max_batch:
            raise InvalidItemError(f"at most {self._max_batch} items per request")
        owner_of_key: dict[str, tuple[str, str]] = {}
        for index, item in enumerate(items):
            _check_item(index, item)
            owner = (item.patient_ref, item.breach_id)
            if owner_of_key.setdefault(item.idempotency_key, owner) != owner:
                raise InvalidItemError(
                    f"items[{index}].idempotency_key: already used for another patient or breach"
                )
        for breach_id in {item.breach_id for item in items}:
            if self._catalogue.is_retracted(breach_id):
                raise RetractedBreachError(f"breach {breach_id!r} was retracted")
            if self._catalogue.get(breach_id) is None:
                raise UnknownBreachError(f"breach {breach_id!r} is not published")

    async def _submit_one(self, tenant: str, item: OutreachItem, ref: str) -> bool:
        """Whether this call queued the item (False: it was already taken care of)."""
        key = self._ledger.outreach_key(tenant, item.breach_id, ref)
        for _ in range(_LEDGER_TRIES):
            entry = LedgerEntry.new(tenant, item.breach_id, ref, item.idempotency_key)
            created = await self._ledger.create(key, entry)
            if created is not None:
                return await self._enqueue(tenant, item, created)
            current = await self._ledger.get(key)
            if current is None:  # deleted in between: create again
                continue
            if current.entry.state == QUEUED and current.entry.queued_seq == 0:
                return await self._enqueue(tenant, item, current)
            if current.entry.state != DEAD:
                return False
            revived = current.entry.evolve(
                state=QUEUED,
                round=current.entry.round + 1,
                queued_seq=0,
                attempts=0,
                channel="",
                detail="",
            )
            try:
                recorded = await self._ledger.replace(current, revived)
            except LedgerConflictError:
                continue
            return await self._enqueue(tenant, item, recorded)
        raise LedgerConflictError(key)

    async def _enqueue(self, tenant: str, item: OutreachItem, recorded: Versioned) -> bool:
        """Publish this round of the entry; True unless the stream already had it."""
        entry = recorded.entry
        queued = OutreachItem(
            patient_ref=item.patient_ref,
            breach_id=item.breach_id,
            idempotency_key=entry.idempotency_key,
            sealed_contact=item.sealed_contact,
        )
        ack = await publish_request(self._js, tenant, queued, recorded.key, entry.round)
        # A worker (or a concurrent submission) may have recorded it first.
        with contextlib.suppress(LedgerConflictError):
            await self._ledger.replace(recorded, entry.evolve(queued_seq=ack.seq))
        if ack.duplicate:
            return False
        await self._statuses.publish(
            status_for(tenant, queued, OutreachStatus.STATE_QUEUED), entry.round
        )
        return True


def _check_item(index: int, item: OutreachItem) -> None:
    where = f"items[{index}]"
    ref = item.patient_ref
    if not ref or len(ref) > MAX_PATIENT_REF_LENGTH or not ref.isprintable():
        raise InvalidItemError(
            f"{where}.patient_ref: must be 1 to {MAX_PATIENT_REF_LENGTH} printable characters"
        )
    if not is_breach_id(item.breach_id):
        raise InvalidItemError(f"{where}.breach_id: must be a published breach id")
    try:
        message_uuid(item.idempotency_key)
    except ValueError as exc:
        raise InvalidItemError(f"{where}.{exc}") from None
    size = len(item.sealed_contact)
    if not SEAL_OVERHEAD < size <= MAX_SEALED_CONTACT_BYTES:
        raise InvalidItemError(
            f"{where}.sealed_contact: must be a sealed box of at most "
            f"{MAX_SEALED_CONTACT_BYTES} bytes"
        )
