"""Outreach intake: check each item of a tenant's batch, prove it, record it, queue it.

A batch is refused whole (an error status; nothing stored) only when it is
malformed — too many items, a field that breaks the wire rules, one
idempotency key for two items — or names a breach that is not published, was
retracted, or cannot be checked (no proof index). Everything else is judged
per item, cheapest first; a refused item gets a receipt saying why
(`OutreachReceipt.Refusal`) and nothing of it is stored or queued:

1. the sealed contact must open (REFUSAL_UNREADABLE_CONTACT) — in memory,
   here and in the worker only — and the recipient's name must pass the
   notice rules (`notice.check_recipient_name`: REFUSAL_CONTACT_REJECTED);
2. its proof of match must hold (`proofs`: REFUSAL_NO_PROOF,
   REFUSAL_INVALID_PROOF); the notice's categories and strength come from it;
3. an item not yet in the ledger (or dead and submitted again) reserves the
   proven entry and every address its notice could go to, for this breach
   and tenant (`reservations`: REFUSAL_PROOF_USED, REFUSAL_DUPLICATE_ADDRESS);
4. and is charged to the tenant's daily outreach limit, one count shared by
   every replica (`breachmatch.quota`: REFUSAL_RATE_LIMITED, its reservations
   given back).

Patient refs arrive opaque — an HMAC under a key only the hospital holds,
64 hex digits, checked here — so status events and dead letters carry no
raw ref, and the ledger keys them again under the notifier's own key.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum

import nacl.public
from nats.js import JetStreamContext

from breachmatch import logs, refusals
from breachmatch.filter import Manifest, is_breach_id
from breachmatch.quota import DailyQuota, as_many_as_fit
from breachmatch.tenants import Tenants
from breachmatch.v1.outreach_pb2 import (
    ContactDetails,
    OutreachItem,
    OutreachReceipt,
    OutreachStatus,
)
from breachmatch_notifier import metrics
from breachmatch_notifier.breaches import BreachCatalogue
from breachmatch_notifier.channels import message_uuid
from breachmatch_notifier.config import MAX_SEALED_CONTACT_BYTES
from breachmatch_notifier.contact import ContactError, open_contact
from breachmatch_notifier.ledger import (
    DEAD,
    QUEUED,
    Ledger,
    LedgerConflictError,
    LedgerEntry,
    Versioned,
)
from breachmatch_notifier.notice import NoticeError, check_recipient_name
from breachmatch_notifier.proofs import ProofChecker, ProofRefusal, ProvenMatch
from breachmatch_notifier.queue import publish_request
from breachmatch_notifier.reservations import (
    ENTRY,
    Reservation,
    Reservations,
    contact_addresses,
)
from breachmatch_notifier.status import StatusEvents, status_for

log = logs.get_logger(__name__)

Refusal = OutreachReceipt.Refusal

#: nacl SealedBox overhead: ephemeral public key (32) and MAC (16).
SEAL_OVERHEAD = 48
#: An opaque patient ref: HMAC-SHA256 in lower-case hex (what the SDK sends).
OPAQUE_REF = re.compile(r"[0-9a-f]{64}")
#: Where a tenant's daily outreach counts live in the ledger bucket.
QUOTA_PREFIX = "quota"
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


@dataclass(frozen=True, slots=True)
class _Refused:
    refusal: Refusal.ValueType
    detail: str


@dataclass(frozen=True, slots=True)
class _Checked:
    """An item whose contact opened and whose proof holds."""

    item: OutreachItem
    #: The ledger's keyed reference of the patient, and the item's ledger key.
    ref: str
    key: str
    proven: ProvenMatch
    reservations: list[Reservation]


#: Placeholder of an item whose proof is still to be checked (never returned).
_UNPROVEN = _Refused(Refusal.REFUSAL_UNSPECIFIED, "")


class _Next(Enum):
    """What an item that passed its checks needs next."""

    #: Already queued or settled: nothing to do (a duplicate).
    NOTHING = "nothing"
    #: Recorded but its publish was never confirmed: publish it again.
    REQUEUE = "requeue"
    #: New (or dead and submitted again): a notice will go out, so it counts against the limit.
    QUEUE = "queue"


class Intake:
    def __init__(
        self,
        *,
        js: JetStreamContext,
        ledger: Ledger,
        statuses: StatusEvents,
        catalogue: BreachCatalogue,
        proofs: ProofChecker,
        reservations: Reservations,
        quota: DailyQuota,
        tenants: Tenants,
        channels: Collection[str],
        secret_key: nacl.public.PrivateKey,
        max_batch: int,
    ) -> None:
        self._js = js
        self._ledger = ledger
        self._statuses = statuses
        self._catalogue = catalogue
        self._proofs = proofs
        self._reservations = reservations
        self._quota = quota
        self._tenants = tenants
        self._channels = tuple(channels)
        self._box = nacl.public.SealedBox(secret_key)
        self._max_batch = max_batch

    async def submit(self, tenant: str, items: Sequence[OutreachItem]) -> list[OutreachReceipt]:
        """Receipts in item order; raises `IntakeError` (or `BreachUnprovableError`) first."""
        self._check(items)
        examined = await self._examine(tenant, items)
        checked = {i: found for i, found in enumerate(examined) if isinstance(found, _Checked)}
        first_of: dict[str, int] = {}
        for index, found in checked.items():
            first_of.setdefault(found.key, index)
        unique = sorted(first_of.values())
        decided: dict[int, _Next | _Refused] = {**_within_batch(checked, unique)}
        pending = [i for i in unique if i not in decided]
        prepared = await asyncio.gather(*(self._prepare(checked[i]) for i in pending))
        decided.update(zip(pending, prepared, strict=True))
        await self._charge(tenant, checked, decided)
        to_queue = [i for i in unique if decided[i] in (_Next.QUEUE, _Next.REQUEUE)]
        results = await asyncio.gather(*(self._submit_one(tenant, checked[i]) for i in to_queue))
        queued = dict(zip(to_queue, results, strict=True))
        receipts = [
            _receipt(item, examined[index], decided.get(index), queued.get(index, False))
            for index, item in enumerate(items)
        ]
        outcomes = Counter(_outcome(receipt) for receipt in receipts)
        for outcome, count in outcomes.items():
            metrics.OUTREACH_SUBMITTED.labels(tenant, outcome).inc(count)
        log.info("outreach submitted", items=len(items), **outcomes)
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
            self._breach_manifest(breach_id)

    def _breach_manifest(self, breach_id: str) -> Manifest:
        """The breach's newest verified version; refuses a retracted or unknown breach."""
        if self._catalogue.is_retracted(breach_id):
            raise RetractedBreachError(f"breach {breach_id!r} was retracted")
        manifest = self._catalogue.manifest(breach_id)
        if manifest is None:
            raise UnknownBreachError(f"breach {breach_id!r} is not published")
        return manifest

    async def _examine(
        self, tenant: str, items: Sequence[OutreachItem]
    ) -> list[_Checked | _Refused]:
        """Open each contact and check its name, then the proofs, breach by breach.

        Nothing is stored; the contacts are dropped when this returns.
        """
        opened = [_open_and_check(self._box, index, item) for index, item in enumerate(items)]
        examined: list[_Checked | _Refused] = [
            found if isinstance(found, _Refused) else _UNPROVEN for found in opened
        ]
        for breach_id in {item.breach_id for item in items}:
            # The newest verified version: a correction replaces the body proofs are checked
            # against, and a retraction that arrived since `_check` refuses the batch.
            manifest = self._breach_manifest(breach_id)
            contacts = {
                index: found
                for index, found in enumerate(opened)
                if isinstance(found, ContactDetails) and items[index].breach_id == breach_id
            }
            outcomes = await self._proofs.check_many(
                manifest, [c.proof if c.HasField("proof") else None for c in contacts.values()]
            )
            for (index, contact), outcome in zip(contacts.items(), outcomes, strict=True):
                examined[index] = self._checked(tenant, index, items[index], contact, outcome)
        return examined

    def _checked(
        self,
        tenant: str,
        index: int,
        item: OutreachItem,
        contact: ContactDetails,
        outcome: ProvenMatch | ProofRefusal,
    ) -> _Checked | _Refused:
        if isinstance(outcome, ProofRefusal):
            return _Refused(outcome.refusal, f"items[{index}].contact.{outcome.detail}")
        ref = self._ledger.patient_ref(tenant, item.patient_ref, item.breach_id)
        addresses = contact_addresses(contact, self._channels)
        return _Checked(
            item=item,
            ref=ref,
            key=self._ledger.outreach_key(tenant, item.breach_id, ref),
            proven=outcome,
            reservations=self._reservations.needed(
                tenant, item.breach_id, outcome.entry, addresses
            ),
        )

    async def _prepare(self, checked: _Checked) -> _Next | _Refused:
        """What a checked item needs; a new one takes its reservations here."""
        current = await self._ledger.get(checked.key)
        if current is not None and current.entry.state != DEAD:
            unconfirmed = current.entry.state == QUEUED and current.entry.queued_seq == 0
            return _Next.REQUEUE if unconfirmed else _Next.NOTHING
        conflict = await self._reservations.acquire(checked.key, checked.reservations)
        return _Next.QUEUE if conflict is None else _reserved_elsewhere(conflict)

    async def _charge(
        self,
        tenant: str,
        checked: dict[int, _Checked],
        decided: dict[int, _Next | _Refused],
    ) -> None:
        """Charge the new items to the tenant's daily limit; those past it are refused."""
        new = [index for index, next_step in decided.items() if next_step is _Next.QUEUE]
        if not new:
            return
        limit = self._tenants.get(tenant).outreach_daily_limit
        allowance = await self._quota.take(tenant, limit, as_many_as_fit(len(new)))
        resets_at = allowance.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        for index in sorted(new)[allowance.granted :]:
            await self._reservations.release(checked[index].key, checked[index].reservations)
            decided[index] = _Refused(
                Refusal.REFUSAL_RATE_LIMITED,
                f"the daily outreach limit of {limit} notices is reached until {resets_at}",
            )

    async def _submit_one(self, tenant: str, checked: _Checked) -> bool:
        """Whether this call queued the item (False: it was already taken care of)."""
        item, key = checked.item, checked.key
        for _ in range(_LEDGER_TRIES):
            entry = LedgerEntry.new(tenant, item.breach_id, checked.ref, item.idempotency_key)
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


def _open_and_check(
    box: nacl.public.SealedBox[nacl.public.PrivateKey], index: int, item: OutreachItem
) -> ContactDetails | _Refused:
    """The item's contact if it opens and its name passes the notice rules."""
    where = f"items[{index}]"
    try:
        contact = open_contact(box, item.sealed_contact)
    except ContactError as exc:
        return _Refused(Refusal.REFUSAL_UNREADABLE_CONTACT, f"{where}.sealed_contact: {exc}")
    try:
        check_recipient_name(contact.name)
    except NoticeError as exc:
        return _Refused(Refusal.REFUSAL_CONTACT_REJECTED, f"{where}.contact.{exc}")
    return contact


def _reserved_elsewhere(conflict: Reservation) -> _Refused:
    if conflict.what == ENTRY:
        return _Refused(
            Refusal.REFUSAL_PROOF_USED,
            "proof: this breach entry already backs a notice to another patient",
        )
    return _Refused(
        Refusal.REFUSAL_DUPLICATE_ADDRESS,
        f"contact.{conflict.what}: already has a notice about this breach",
    )


def _within_batch(checked: dict[int, _Checked], unique: Sequence[int]) -> dict[int, _Refused]:
    """Items needing a reservation an earlier item of the same batch needs: the first wins.

    Concurrent reservations would otherwise let whichever item reaches NATS first win.
    """
    holder: dict[str, str] = {}
    refused = {}
    for index in unique:
        item = checked[index]
        conflict = next(
            (c for c in item.reservations if holder.get(c.key, item.key) != item.key), None
        )
        if conflict is not None:
            refused[index] = _reserved_elsewhere(conflict)
            continue
        holder.update(dict.fromkeys((c.key for c in item.reservations), item.key))
    return refused


def _receipt(
    item: OutreachItem,
    examined: _Checked | _Refused,
    decided: _Next | _Refused | None,
    queued: bool,
) -> OutreachReceipt:
    outcome = decided if isinstance(decided, _Refused) else examined
    if isinstance(outcome, _Refused):
        return OutreachReceipt(
            idempotency_key=item.idempotency_key,
            accepted=False,
            refusal=outcome.refusal,
            detail=outcome.detail,
        )
    return OutreachReceipt(
        idempotency_key=item.idempotency_key,
        accepted=queued,
        strength=outcome.proven.strength.value,
    )


def _outcome(receipt: OutreachReceipt) -> str:
    """The metric label of a receipt: accepted, duplicate or refusal_<reason>."""
    if receipt.refusal != Refusal.REFUSAL_UNSPECIFIED:
        return Refusal.Name(receipt.refusal).lower()
    return "accepted" if receipt.accepted else "duplicate"


def _check_item(index: int, item: OutreachItem) -> None:
    where = f"items[{index}]"
    if not OPAQUE_REF.fullmatch(item.patient_ref):
        raise InvalidItemError(
            f"{where}.patient_ref: must be an opaque ref, HMAC-SHA256 of the hospital's "
            "patient reference in 64 lower-case hex digits, never the reference itself"
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
