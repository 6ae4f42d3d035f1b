"""Claims on ledger entries: one sender at a time, and no blind repeat of an unknown send.

JetStream delivers a request at least once: it comes back when its worker
goes quiet for ``ack_wait`` — because the worker died, or because NATS
itself was away and the worker's "still working" signals were lost while it
was very much alive. Exactly one notice per person per breach therefore rests
on the ledger entry, and on two rules.

**A claim is exclusive while its holder lives.** Before it sends anything a
worker claims the entry: a compare-and-set on the entry's KV revision that
writes state CLAIMED, a fresh random fencing token (``holder``) and a lease
(``lease_until``, two ``ack_wait`` from now). Every later write of the holder
is again a compare-and-set on the revision it last wrote itself, so the moment
anyone else writes the entry, the holder's next write fails
(`ClaimLostError`) and it stops. Another worker that receives the request
meanwhile finds the lease running and backs off until it ends (`assess`:
BUSY). A lease only lapses when its holder has been silent for two
``ack_wait`` — it died, or lost NATS for that long.

**An intent is recorded before a send that cannot be taken back or
recognised.** Channels whose provider recognises a repeat by our message id
— Digital Post (the MeMo message UUID, and the outbox file named after it),
an SMS gateway configured as deduplicating (client reference), the dry run —
are simply sent again after a lapsed claim: the provider drops the copy. Plain
SMTP cannot: an SMTP server takes the same message twice, Message-ID or not
(RFC 1047 describes exactly this window). So the e-mail channel, once the
server has accepted the recipient and just before DATA, calls `Claim.commit`,
which writes state SENDING with the channel and the Message-ID (and renews the
lease). If that write fails, DATA is never sent. Then:

* the server answers DATA (250): the holder writes SENT;
* the server refuses DATA with a reply code: the message was not taken, the
  intent is withdrawn (back to CLAIMED) and the usual retry or fallback
  follows;
* the session breaks off after DATA without an answer, or the holder dies
  anywhere between the intent and SENT: **the outcome is unknown.**

**Reconciliation rule: an intent without an outcome is held, never resent.**
A worker that finds a SENDING entry whose lease has lapsed marks it HELD
(keeping the holder's token, channel and Message-ID); a holder that saw its
session break off after DATA does the same itself. HELD is final for the
workers and shown to the hospital as STATE_HELD. Why not resend: for a plain
SMTP relay nothing the notifier can query says whether the message was taken,
and a breach notice sent twice to a patient is a harm of its own (it reads as
a second breach and teaches people to ignore such letters), while a held one is
visible, counted and resolved within the operator's working day. The operator
reconciles each held notice by its Message-ID in the relay's log (Postfix
logs ``message-id=<…>`` for every message it accepted): found means sent;
not found means the hospital submits it again. The window this leaves is small
— from the intent write to the SENT write, one DATA exchange — and it is the
only one: a worker killed before the intent leaves a CLAIMED entry that the
next worker claims and sends (nothing can have gone out over SMTP), and one
killed after SENT leaves nothing to do.

A holder that lost NATS after sending keeps trying to write SENT until it
lands (`Claim.settle`): if a colleague meanwhile marked the entry HELD over
the holder's own intent (same token), the holder overwrites it with SENT — it
knows the outcome. Writes whose reply was lost are recognised on re-reading
by their exact content, so a NATS restart between a write and its
acknowledgement neither loses nor repeats a step.

Clocks: leases compare wall clocks of different replicas. Skew only shortens
or lengthens a lease; safety comes from the compare-and-set, not the clock.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from typing import Any

import nats.errors

from breachmatch import logs
from breachmatch_notifier.ledger import (
    CLAIMED,
    HELD,
    QUEUED,
    SENDING,
    SENT,
    Ledger,
    LedgerConflictError,
    LedgerEntry,
    Versioned,
)

log = logs.get_logger(__name__)

#: Pause between tries of a ledger read or write while NATS is unreachable.
RETRY_PAUSE = 0.5
_TOKEN_BYTES = 12


class ClaimLostError(Exception):
    """Someone else wrote the entry after this claim last did: stop, send nothing.

    ``latest`` is the entry as it now is (None if it could not be read).
    """

    def __init__(self, latest: Versioned | None) -> None:
        super().__init__("the ledger entry was taken over")
        self.latest = latest


class Verdict(enum.Enum):
    #: Final (sent, dead, skipped, held): nothing more to send.
    SETTLED = "settled"
    #: Nobody holds it: queued, or a lapsed claim that recorded no intent.
    CLAIMABLE = "claimable"
    #: A holder's lease is running: back off until it ends.
    BUSY = "busy"
    #: A lapsed holder had recorded an intent: the outcome is unknown, hold it.
    ORPHANED = "orphaned"


def assess(entry: LedgerEntry, now: float) -> Verdict:
    """What a worker that has just read ``entry`` (at wall-clock ``now``) may do with it."""
    if entry.terminal:
        return Verdict.SETTLED
    if entry.state in (CLAIMED, SENDING) and entry.lease_until > now:
        return Verdict.BUSY
    if entry.state == SENDING:
        return Verdict.ORPHANED
    return Verdict.CLAIMABLE


#: Why a lapsed intent is held (the holder is gone, so it cannot say more).
ORPHANED_REASON = "the notifier stopped between its recorded intent and the server's answer"


def held_detail(entry: LedgerEntry, reason: str) -> str:
    """Why an entry is held, and what the operator reconciles it by (no contact data)."""
    return (
        f"outcome unknown over {entry.channel}: {reason}; "
        f"reconcile Message-ID {entry.reference} in the relay's log"
    )


class Claim:
    """One worker's hold on one ledger entry, from `take` to `settle` or `release`."""

    def __init__(self, ledger: Ledger, current: Versioned, *, lease: float, patience: float):
        self._ledger = ledger
        self._current = current
        self._token = current.entry.holder
        self._lease = lease
        self._patience = patience

    @classmethod
    async def take(
        cls, ledger: Ledger, current: Versioned, *, lease: float, patience: float, **changes: Any
    ) -> Claim:
        """Claim ``current`` (as just read) under a new fencing token.

        ``lease`` is how long the claim stands without a word from its holder;
        ``patience`` how long NATS errors are ridden out before a write gives
        up. Raises `ClaimLostError` when someone else wrote the entry first.
        """
        wanted = current.entry.evolve(
            state=CLAIMED,
            holder=secrets.token_hex(_TOKEN_BYTES),
            lease_until=time.time() + lease,
            channel="",
            reference="",
            **changes,
        )
        written = await _write(ledger, current, wanted, token=wanted.holder, patience=patience)
        return cls(ledger, written, lease=lease, patience=patience)

    @property
    def entry(self) -> LedgerEntry:
        return self._current.entry

    async def commit(self, channel: str, reference: str) -> None:
        """Record the intent to hand the notice to ``channel`` now (see the module docstring).

        The caller must not send if this raises: `ClaimLostError` (taken
        over) or a NATS error (the intent may not be recorded).
        """
        wanted = self.entry.evolve(
            state=SENDING,
            channel=channel,
            reference=reference,
            lease_until=time.time() + self._lease,
        )
        self._current = await self._write(wanted, patience=self._patience)

    async def withdraw(self) -> None:
        """The channel refused after the intent, so nothing went out: back to CLAIMED."""
        if self.entry.state == SENDING:
            wanted = self.entry.evolve(state=CLAIMED, channel="", reference="")
            self._current = await self._write(wanted, patience=self._patience)

    async def settle(self, state: str, **changes: Any) -> bool:
        """Write the outcome; False when another worker had already settled the entry.

        SENT (something went out) is retried through NATS outages until it
        lands, and overrules anything not yet final — and a HELD written over
        this claim's own intent. Other outcomes only land while the claim
        still stands.
        """
        current = self._current
        while True:
            wanted = current.entry.evolve(
                state=state, holder=self._token, lease_until=0.0, **changes
            )
            patience = None if state == SENT else self._patience
            try:
                self._current = await _write(
                    self._ledger, current, wanted, token=self._token, patience=patience
                )
                return True
            except ClaimLostError as lost:
                latest = lost.latest
                if state != SENT or latest is None or not self._may_overrule(latest.entry):
                    log.error(
                        "ledger entry settled by another worker",
                        state=state,
                        found=latest.entry.state if latest else "missing",
                    )
                    return False
                log.warning(
                    "claim lapsed during the send; recorded as sent", found=latest.entry.state
                )
                current = latest

    async def hold(self, reason: str) -> bool:
        """This holder cannot know whether the channel took the notice: hold it for review."""
        return await self.settle(HELD, detail=held_detail(self.entry, reason))

    async def release(self, detail: str) -> None:
        """Give the entry back for a later retry (nothing went out); best effort.

        If it fails the lease lapses and the next worker claims the entry.
        """
        wanted = self.entry.evolve(
            state=QUEUED, holder="", lease_until=0.0, channel="", reference="", detail=detail
        )
        try:
            self._current = await self._write(wanted, patience=self._patience)
        except ClaimLostError:
            pass
        except nats.errors.Error as exc:
            log.warning("claim not released; its lease will lapse", error=type(exc).__name__)

    def _may_overrule(self, found: LedgerEntry) -> bool:
        if found.state == HELD:
            return found.holder == self._token
        return not found.terminal

    async def _write(self, wanted: LedgerEntry, *, patience: float | None) -> Versioned:
        return await _write(
            self._ledger, self._current, wanted, token=self._token, patience=patience
        )


async def hold_orphan(ledger: Ledger, current: Versioned, *, patience: float) -> Versioned:
    """Mark an entry whose lapsed holder had recorded an intent as HELD.

    The holder's token, channel and Message-ID stay, so the operator can
    reconcile it and the holder, should it come back, can still record SENT.
    Raises `ClaimLostError` when the entry changed since it was read.
    """
    detail = held_detail(current.entry, ORPHANED_REASON)
    wanted = current.entry.evolve(state=HELD, lease_until=0.0, detail=detail)
    return await _write(ledger, current, wanted, token="", patience=patience)


async def _write(
    ledger: Ledger,
    current: Versioned,
    wanted: LedgerEntry,
    *,
    token: str,
    patience: float | None,
) -> Versioned:
    """Compare-and-set ``wanted`` over ``current``, riding out NATS errors for ``patience`` s.

    After a conflict or a failed write the entry is read again: if it already
    holds ``wanted`` (our write landed, its reply was lost) that is success;
    if it holds an unfinished write of the claim with fencing ``token`` (one
    whose reply was lost and that was given up on), the write is tried again
    from there; anything else is someone else's and raises `ClaimLostError`.
    ``patience`` None retries until it lands (the task may still be cancelled).
    """
    loop = asyncio.get_running_loop()
    deadline = None if patience is None else loop.time() + patience
    while True:
        try:
            return await ledger.replace(current, wanted)
        except LedgerConflictError:
            pass
        except nats.errors.Error as exc:
            if deadline is not None and loop.time() >= deadline:
                raise
            log.warning("ledger write failed; retrying", error=type(exc).__name__)
            await asyncio.sleep(RETRY_PAUSE)
        latest = await _read(ledger, current.key, deadline)
        if latest is None:
            raise ClaimLostError(None)
        if latest.entry == wanted:
            return latest
        if latest.revision != current.revision:
            own = token != "" and latest.entry.holder == token
            if not (own and latest.entry.state in (CLAIMED, SENDING)):
                raise ClaimLostError(latest)
            current = latest


async def _read(ledger: Ledger, key: str, deadline: float | None) -> Versioned | None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await ledger.get(key)
        except nats.errors.Error as exc:
            if deadline is not None and loop.time() >= deadline:
                raise
            log.warning("ledger read failed; retrying", error=type(exc).__name__)
            await asyncio.sleep(RETRY_PAUSE)
