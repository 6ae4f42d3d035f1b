"""Delivering one outreach request: ledger, claim, sealed box, notice, channel, settle.

For each request a worker, in this order:

1. reads the ledger entry. Superseded by a newer round → ack. Settled already
   (sent, dead, skipped, held) → re-emit its status and ack, send nothing:
   this is the redelivery after a crash, and the ledger has the outcome;
2. backs off (nak until the lease ends) when another worker's claim on the
   entry is still running, and holds the entry for review when a lapsed
   claim had recorded an intent to send — the outcome is unknown and the
   notice is not sent again (`breachmatch_notifier.claims`);
3. claims the entry (state CLAIMED, a fencing token, a lease, attempt count
   +1: one compare-and-set), and dead-letters it if that was one attempt too
   many (``max_deliver``) — which also ends a request that crashes its worker
   every time;
4. opens the sealed contact with the notifier's secret key — only here and
   at intake, in memory — checks its proof of match again (`proofs`: a
   request that reached the queue some other way proves nothing) and renders
   the notice with the tenant's sender identity, the breach's newest verified
   manifest, the contact's language and the categories of the proven entry;
5. delivers it while telling JetStream it is in progress; a channel that
   cannot recognise a repeat records its intent on the claim right before its
   point of no return; then the worker writes SENT (compare-and-set)
   *before* acknowledging the message. The worker waits for the
   acknowledgement's reply (so that when it says a notice is done, nothing
   of it can come back), but only this task waits: the many deliveries in
   flight share the connection, so their acks are pipelined.

So a worker killed at any point left the entry claimed (the request comes
back after ``ack_wait``, the claim lapses, the next worker claims it and
sends: nothing went out over a channel that cannot recognise a repeat),
intent-recorded (held for review, never sent twice) or settled (the
redelivery is acked and nothing is sent again).

Outcomes: a transient failure is retried after the configured backoff until
the attempts are used up, then dead-lettered; a channel that refuses the
address permanently is reported FAILED on that channel and the next one is
tried; when none is left the request is DEAD. A session cut off after the
point of no return is HELD. A sealed box that does not open, or a request
that is not one, is poison: dead-lettered at once, and the message terminated
so it is never redelivered. The contact and the rendered notice live only in
`_deliver`'s frame and are gone when it returns.
"""

from __future__ import annotations

import time

import nacl.public
import nats.errors
import structlog
from nats.aio.msg import Msg

from breachmatch import logs
from breachmatch.tenants import Tenants
from breachmatch.v1.outreach_pb2 import OutreachStatus
from breachmatch_notifier import dead_letters, metrics
from breachmatch_notifier.breaches import BreachCatalogue, breach_info
from breachmatch_notifier.channels import (
    DeliveryOutcomeUnknownError,
    DeliveryResult,
    Dispatcher,
    TransientDeliveryError,
    UndeliverableError,
)
from breachmatch_notifier.claims import Claim, ClaimLostError, Verdict, assess, hold_orphan
from breachmatch_notifier.config import NotifierConfig
from breachmatch_notifier.contact import ContactError, open_contact
from breachmatch_notifier.dead_letters import DeadLetters
from breachmatch_notifier.ledger import DEAD, SENT, SKIPPED, Ledger, LedgerEntry, Versioned
from breachmatch_notifier.notice import NoticeContext, NoticeError, NoticeRenderer, Sender
from breachmatch_notifier.proofs import BreachUnprovableError, ProofChecker, ProofRefusal
from breachmatch_notifier.queue import (
    QueuedRequest,
    RequestFormatError,
    read_request,
    subject_token,
)
from breachmatch_notifier.status import StatusEvents, status_for
from breachmatch_notifier.worker import keep_alive

log = logs.get_logger(__name__)

# What became of a request, as counted in the worker's summary line (`worker`);
# a notice sent counts as ``sent_<channel>``.
SUPERSEDED = "superseded"
#: Found settled already (a redelivery after a crash): its status told again, nothing sent.
RESETTLED = "resettled"
BACKED_OFF = "backed_off"
HELD_OUTCOME = "held"
SKIPPED_OUTCOME = "skipped"
RETRYING = "retrying"
DEAD_LETTERED = "dead_lettered"
TAKEN_OVER = "taken_over"

#: Reads and compare-and-sets of one entry before a worker leaves it to another.
_CLAIM_TRIES = 3
#: Added to a running lease before looking again, so the lease has surely ended.
_LEASE_MARGIN = 0.5


class OutreachDelivery:
    """The `worker.Handler` of stream OUTREACH."""

    def __init__(
        self,
        *,
        config: NotifierConfig,
        ledger: Ledger,
        statuses: StatusEvents,
        dead: DeadLetters,
        catalogue: BreachCatalogue,
        tenants: Tenants,
        renderer: NoticeRenderer,
        dispatcher: Dispatcher,
        proofs: ProofChecker,
        secret_key: nacl.public.PrivateKey,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._statuses = statuses
        self._dead = dead
        self._catalogue = catalogue
        self._tenants = tenants
        self._renderer = renderer
        self._dispatcher = dispatcher
        self._proofs = proofs
        self._box = nacl.public.SealedBox(secret_key)

    async def handle(self, msg: Msg) -> str:
        try:
            request = read_request(msg)
        except RequestFormatError as exc:
            return await self._bury_unreadable(msg, str(exc))
        item = request.item
        with structlog.contextvars.bound_contextvars(
            tenant=request.tenant, breach_id=item.breach_id, idempotency_key=item.idempotency_key
        ):
            return await self._handle(msg, request)

    async def _handle(self, msg: Msg, request: QueuedRequest) -> str:
        item = request.item
        ref = self._ledger.patient_ref(request.tenant, item.patient_ref, item.breach_id)
        key = self._ledger.outreach_key(request.tenant, item.breach_id, ref)
        config = self._config
        # A conflict is usually intake recording the queue sequence just after
        # publishing; read again and decide again rather than wait a backoff.
        for _ in range(_CLAIM_TRIES):
            if not (current := await self._ledger.get(key)):
                return await self._bury(
                    msg, request, None, dead_letters.NO_LEDGER_ENTRY, "no ledger entry"
                )
            entry = current.entry
            if request.round != entry.round or entry.queued_seq not in (0, request.sequence):
                await msg.ack_sync()
                return SUPERSEDED
            verdict = assess(entry, time.time())
            if verdict is Verdict.SETTLED:
                # Settled by an earlier delivery whose worker may have died before it said so.
                await self._publish(request, entry.proto_state, entry.channel, entry.detail)
                await msg.ack_sync()
                return RESETTLED
            if verdict is Verdict.BUSY:
                wait = entry.lease_until - time.time() + _LEASE_MARGIN
                log.info("request is held by another worker; backing off", seconds=round(wait, 1))
                await msg.nak(delay=max(wait, _LEASE_MARGIN))
                return BACKED_OFF
            try:
                if verdict is Verdict.ORPHANED:
                    return await self._hold_orphan(msg, request, current)
                claim = await Claim.take(
                    self._ledger,
                    current,
                    lease=config.claim_lease,
                    patience=config.ack_wait,
                    attempts=entry.attempts + 1,
                    queued_seq=request.sequence,
                )
            except ClaimLostError:
                continue
            async with keep_alive(msg, config.ack_wait / 3):
                return await self._deliver(msg, request, claim)
        log.info("request is being handled elsewhere; backing off")
        await msg.nak(delay=config.retry_delay(1))
        return BACKED_OFF

    async def _hold_orphan(self, msg: Msg, request: QueuedRequest, current: Versioned) -> str:
        """A lapsed holder recorded an intent and never an outcome: hold it, send nothing."""
        held = await hold_orphan(self._ledger, current, patience=self._config.ack_wait)
        return await self._held(msg, request, held.entry)

    async def _deliver(self, msg: Msg, request: QueuedRequest, claim: Claim) -> str:
        item = request.item
        if claim.entry.attempts > self._config.max_deliver:
            detail = f"gave up after {self._config.max_deliver} attempts"
            return await self._bury(msg, request, claim, dead_letters.EXHAUSTED, detail)
        # The newest verified version: its facts render the notice and its body checks the proof.
        manifest = self._catalogue.manifest(item.breach_id)
        if manifest is None:
            if self._catalogue.is_retracted(item.breach_id):
                return await self._skip(msg, request, claim)
            return await self._retry_or_bury(
                msg, request, claim, dead_letters.UNKNOWN_BREACH, "breach not known yet"
            )
        try:
            contact = open_contact(self._box, item.sealed_contact)
        except ContactError as exc:
            return await self._bury(msg, request, claim, dead_letters.UNOPENABLE, str(exc))
        try:
            # Intake checked it too; the categories are read here, from the proven entry.
            proven = await self._proofs.check(manifest, contact.proof)
        except ProofRefusal as exc:
            return await self._bury(msg, request, claim, dead_letters.UNPROVEN, exc.detail)
        except BreachUnprovableError as exc:
            return await self._retry_or_bury(msg, request, claim, dead_letters.UNPROVEN, str(exc))
        tenant = self._tenants.get(request.tenant)
        sender = Sender(tenant.organisation, tenant.contact_point)
        try:
            context = NoticeContext.for_contact(
                breach_info(manifest), sender, contact, proven.categories
            )
            notice = self._renderer.render(context)
            result = await self._dispatcher.deliver(notice, contact, item.idempotency_key, claim)
        except NoticeError as exc:
            return await self._bury(msg, request, claim, dead_letters.UNRENDERABLE, str(exc))
        except UndeliverableError as exc:
            for failure in exc.failures:
                await self._channel_failed(request, failure.channel, failure.reason)
            return await self._bury(msg, request, claim, dead_letters.UNDELIVERABLE, exc.reason)
        except DeliveryOutcomeUnknownError as exc:
            log.warning("delivery outcome unknown; held for review", reason=str(exc))
            await claim.hold(exc.reason)
            return await self._held(msg, request, claim.entry)
        except TransientDeliveryError as exc:
            metrics.TRANSIENT_FAILURES.labels(exc.channel).inc()
            return await self._retry_or_bury(msg, request, claim, dead_letters.EXHAUSTED, str(exc))
        except ClaimLostError:
            # Another worker holds the entry now and will settle (and ack) it.
            log.warning("claim taken over before the send; left to its new holder")
            return TAKEN_OVER
        except nats.errors.Error as exc:
            # The intent (or the rate grant) could not be recorded, so nothing was sent.
            await claim.release(f"attempt {claim.entry.attempts}: ledger unavailable")
            await msg.nak(delay=self._config.retry_delay(claim.entry.attempts))
            log.warning("intent not recorded; nothing sent, will retry", error=type(exc).__name__)
            return RETRYING
        return await self._sent(msg, request, claim, result)

    async def _sent(
        self, msg: Msg, request: QueuedRequest, claim: Claim, result: DeliveryResult
    ) -> str:
        failed = ", ".join(result.failed_channels)
        detail = f"after {failed} failed" if failed else ""
        await claim.settle(SENT, channel=result.channel, detail=detail)
        for channel in result.failed_channels:
            await self._channel_failed(request, channel, "refused the address; the next was tried")
        metrics.NOTICES_SENT.labels(result.channel).inc()
        await self._publish(request, OutreachStatus.STATE_SENT, result.channel, detail)
        await msg.ack_sync()
        return f"sent_{result.channel}"

    async def _held(self, msg: Msg, request: QueuedRequest, entry: LedgerEntry) -> str:
        metrics.HELD.labels(entry.channel).inc()
        await self._publish(request, OutreachStatus.STATE_HELD, entry.channel, entry.detail)
        await msg.ack_sync()
        log.warning("notice held for review", channel=entry.channel, reference=entry.reference)
        return HELD_OUTCOME

    async def _channel_failed(self, request: QueuedRequest, channel: str, reason: str) -> None:
        metrics.CHANNEL_FAILURES.labels(channel).inc()
        await self._publish(request, OutreachStatus.STATE_FAILED, channel, reason)

    async def _publish(
        self,
        request: QueuedRequest,
        state: OutreachStatus.State.ValueType,
        channel: str = "",
        detail: str = "",
    ) -> None:
        status = status_for(request.tenant, request.item, state, channel, detail)
        await self._statuses.publish(status, request.round)

    async def _skip(self, msg: Msg, request: QueuedRequest, claim: Claim) -> str:
        """The breach was retracted: nothing to tell (counted as ``skipped``)."""
        detail = "breach retracted"
        await claim.settle(SKIPPED, detail=detail)
        metrics.SKIPPED.inc()
        await self._publish(request, OutreachStatus.STATE_SKIPPED, detail=detail)
        await msg.ack_sync()
        return SKIPPED_OUTCOME

    async def _retry_or_bury(
        self, msg: Msg, request: QueuedRequest, claim: Claim, reason: str, detail: str
    ) -> str:
        attempt = claim.entry.attempts
        if attempt >= self._config.max_deliver:
            detail = f"gave up after {attempt} attempts: {detail}"
            return await self._bury(msg, request, claim, reason, detail)
        await claim.release(f"attempt {attempt} failed: {detail}")
        delay = self._config.retry_delay(attempt)
        await msg.nak(delay=delay)
        log.info("delivery will be retried", attempt=attempt, delay=delay, reason=detail)
        return RETRYING

    async def _bury(
        self,
        msg: Msg,
        request: QueuedRequest,
        claim: Claim | None,
        reason: str,
        detail: str,
    ) -> str:
        """Dead-letter first (deduplicated by sequence), then ledger, status, and terminate."""
        status = status_for(request.tenant, request.item, OutreachStatus.STATE_DEAD, detail=detail)
        await self._dead.publish(subject_token(msg), status, reason, request.sequence)
        if claim is not None:
            await claim.settle(DEAD, detail=detail)
        await self._statuses.publish(status, request.round)
        metrics.DEAD_LETTERS.labels(reason).inc()
        await msg.term()
        log.warning("request dead-lettered", reason=reason, detail=detail)
        return DEAD_LETTERED

    async def _bury_unreadable(self, msg: Msg, detail: str) -> str:
        """A message that is not a request of ours: no ledger entry, no tenant to tell."""
        status = OutreachStatus(state=OutreachStatus.STATE_DEAD, detail=detail)
        sequence = msg.metadata.sequence.stream
        await self._dead.publish(subject_token(msg), status, dead_letters.UNPARSEABLE, sequence)
        metrics.DEAD_LETTERS.labels(dead_letters.UNPARSEABLE).inc()
        await msg.term()
        log.warning("unreadable request dead-lettered", detail=detail, sequence=sequence)
        return DEAD_LETTERED
