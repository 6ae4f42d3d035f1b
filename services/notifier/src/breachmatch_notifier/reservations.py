"""Reservations: one notice per proven entry and per contact address, per breach and tenant.

The ledger makes a notice unique per *patient ref*, but refs are the
hospital's to choose. So before an item is recorded, it reserves, for its
breach and tenant,

* the entry its proof of match proved (`proofs.ProvenMatch.entry`): one real
  match backs one notice, not one per address the hospital cares to list;
* every address the notice could go to — the e-mail, phone and (for Digital
  Post) CPR number of each channel it would be routed to — normalised as the
  channels normalise them: two refs with one address give one notice.

A reservation is a KV entry in the outreach ledger bucket,
``reserved.<tenant>.<breach>.<key>``, created if absent, whose value is the
ledger key of the item holding it. ``<key>`` is an HMAC-SHA256 of the
reserved thing under the notifier's ledger key: the bucket must not become a
list of addresses or tokens. Reserving again for the same item is a no-op, so
a resubmission or a retry after a crash goes through; a reservation held by
another item refuses this one, and the reservations this call made are
released again.

Reservations are taken in sorted order, so of two items racing for the same
pair one always gets both. They are not released once the item is recorded:
a patient who was sent a notice keeps its address and entry.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from breachmatch import bus
from breachmatch.identifiers import (
    IdentifierError,
    normalise_cpr,
    normalise_email,
    normalise_phone,
)
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels import ADDRESS_FIELD, route

RESERVED_PREFIX = "reserved"
ENTRY = "entry"
#: Creates of one reservation that may lose to a release in between before giving up.
_TAKE_TRIES = 3
_NORMALISERS = {"email": normalise_email, "phone": normalise_phone, "cpr": normalise_cpr}


@dataclass(frozen=True, slots=True, order=True)
class Reservation:
    key: str
    #: What is reserved: `ENTRY` or a contact field ("email", "phone", "cpr").
    what: str


def contact_addresses(contact: ContactDetails, channels: Collection[str]) -> set[tuple[str, str]]:
    """(field, normalised address) of every channel a notice to ``contact`` could use.

    An address that does not normalise is left out: its channel refuses it at
    delivery and the next one is tried.
    """
    found = set()
    for channel in route(contact, channels):
        field = ADDRESS_FIELD[channel]
        if field is None:
            continue
        try:
            found.add((field, _NORMALISERS[field](getattr(contact, field))))
        except IdentifierError:
            continue
    return found


class Reservations:
    def __init__(self, kv: KeyValue, ref_key: bytes) -> None:
        self._kv = kv
        self._key = ref_key

    def needed(
        self, tenant: str, breach_id: str, entry: bytes, addresses: Collection[tuple[str, str]]
    ) -> list[Reservation]:
        """The reservations an item must hold, in the order they are taken."""
        things = [(ENTRY, entry.hex()), *addresses]
        scope = ".".join((RESERVED_PREFIX, bus.tenant_token(tenant), bus.tenant_token(breach_id)))
        reservations = []
        for what, value in things:
            message = "\x00".join((tenant, breach_id, what, value)).encode("utf-8")
            digest = hmac.new(self._key, b"reserved\x00" + message, hashlib.sha256).hexdigest()
            reservations.append(Reservation(f"{scope}.{digest}", what))
        return sorted(reservations)

    async def acquire(self, owner: str, reservations: Sequence[Reservation]) -> Reservation | None:
        """Take every reservation for ``owner`` (a ledger key); the first another item holds.

        On a conflict the reservations this call created are released, so nothing of
        a refused item stays behind.
        """
        created: list[tuple[Reservation, int]] = []
        for reservation in reservations:
            held, revision = await self._take(owner, reservation)
            if not held:
                await self._release(created)
                return reservation
            if revision is not None:
                created.append((reservation, revision))
        return None

    async def release(self, owner: str, reservations: Sequence[Reservation]) -> None:
        """Give back what ``owner`` holds (an item refused after reserving: rate-limited)."""
        held = []
        for reservation in reservations:
            try:
                entry = await self._kv.get(reservation.key)
            except KeyNotFoundError:
                continue
            if entry.value == owner.encode() and entry.revision is not None:
                held.append((reservation, entry.revision))
        await self._release(held)

    async def _take(self, owner: str, reservation: Reservation) -> tuple[bool, int | None]:
        """Whether ``owner`` holds ``reservation`` now, and its revision if this call made it."""
        for _ in range(_TAKE_TRIES):
            try:
                return True, await self._kv.create(reservation.key, owner.encode())
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._kv.get(reservation.key)
            except KeyNotFoundError:  # released since our create failed: try again
                continue
            return entry.value == owner.encode(), None
        return False, None

    async def _release(self, held: Sequence[tuple[Reservation, int]]) -> None:
        for reservation, revision in held:
            try:
                await self._kv.delete(reservation.key, last=revision)
            except KeyWrongLastSequenceError:  # changed since: no longer ours to drop
                continue
