"""Delivering one outreach request: ledger, sealed box, notice, channel, settle.

For each request a worker, in this order:

1. reads the ledger entry. Superseded by a newer round → ack. Settled already
   (sent, dead, skipped) → re-emit its status and ack, send nothing: this is
   the redelivery after a crash, and the ledger says the notice went out.
2. dead-letters it if it is past its last attempt (``max_deliver``), which
   also ends a request that crashes its worker every time;
3. claims the entry (attempt count +1, compare-and-set): a second worker
   holding the same request loses the race and backs off;
4. opens the sealed contact with the notifier's secret key — only here and
   at intake, in memory — checks its proof of match again (`proofs`: a
   request that reached the queue some other way proves nothing) and renders
   the notice with the tenant's sender identity, the breach's manifest, the
   contact's language and the categories of the proven entry;
5. delivers it while telling JetStream it is in progress, then writes SENT to
   the ledger (compare-and-set) *before* acknowledging the message.

So a worker killed at any point either left the ledger unsettled (the request
comes back after ``ack_wait`` and is sent by someone else; the channel message
ids derive from the idempotency key, so a receiving system can still spot the
one copy a crash between a channel's acceptance and the ledger write can
leave) or settled (the redelivery is acked and nothing is sent twice).

Outcomes: a transient failure is retried after the configured backoff until
the attempts are used up, then dead-lettered; a channel that refuses the
address permanently is reported FAILED on that channel and the next one is
tried; when none is left the request is DEAD. A sealed box that does not open,
or a request that is not one, is poison: dead-lettered at once, and the
message terminated so it is never redelivered. The contact and the rendered
notice live only in `_deliver`'s frame and are gone when it returns.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
    DeliveryResult,
    Dispatcher,
    TransientDeliveryError,
    UndeliverableError,
)
from breachmatch_notifier.config import NotifierConfig
from breachmatch_notifier.contact import ContactError, open_contact
from breachmatch_notifier.dead_letters import DeadLetters
from breachmatch_notifier.ledger import (
    DEAD,
    SENT,
    SKIPPED,
    Ledger,
    LedgerConflictError,
    Versioned,
)
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

#: Pause between attempts to settle the ledger while NATS is unreachable.
_SETTLE_PAUSE = 0.5
#: Reads and compare-and-sets of one entry before a worker leaves it to another.
_CLAIM_TRIES = 3


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

    async def handle(self, msg: Msg) -> None:
        try:
            request = read_request(msg)
        except RequestFormatError as exc:
            await self._bury_unreadable(msg, str(exc))
            return
        item = request.item
        with structlog.contextvars.bound_contextvars(
            tenant=request.tenant, breach_id=item.breach_id, idempotency_key=item.idempotency_key
        ):
            await self._handle(msg, request)

    async def _handle(self, msg: Msg, request: QueuedRequest) -> None:
        item = request.item
        ref = self._ledger.patient_ref(request.tenant, item.patient_ref, item.breach_id)
        key = self._ledger.outreach_key(request.tenant, item.breach_id, ref)
        # A conflict is usually intake recording the queue sequence just after
        # publishing; read again and decide again rather than wait a backoff.
        for _ in range(_CLAIM_TRIES):
            if not (current := await self._ledger.get(key)):
                await self._bury(
                    msg, request, None, dead_letters.NO_LEDGER_ENTRY, "no ledger entry"
                )
                return
            if not await self._still_open(msg, request, current):
                return
            entry = current.entry
            try:
                claimed = await self._ledger.replace(
                    current,
                    entry.evolve(attempts=entry.attempts + 1, queued_seq=request.sequence),
                )
            except LedgerConflictError:
                continue
            async with keep_alive(msg, self._config.ack_wait / 3):
                await self._deliver(msg, request, claimed)
            return
        log.info("request is being handled elsewhere; backing off")
        await msg.nak(delay=self._config.retry_delay(1))

    async def _still_open(self, msg: Msg, request: QueuedRequest, current: Versioned) -> bool:
        """Whether ``request`` is still to be delivered; if not, it has been settled here."""
        entry = current.entry
        if request.round != entry.round or entry.queued_seq not in (0, request.sequence):
            log.info("superseded request dropped")
            await msg.ack_sync()
            return False
        if entry.terminal:
            # Settled by an earlier delivery whose worker may have died before it said so.
            await self._statuses.publish(
                status_for(
                    request.tenant, request.item, entry.proto_state, entry.channel, entry.detail
                ),
                request.round,
            )
            await msg.ack_sync()
            return False
        if request.delivered > self._config.max_deliver:
            detail = f"gave up after {self._config.max_deliver} attempts"
            await self._bury(msg, request, current, dead_letters.EXHAUSTED, detail)
            return False
        return True

    async def _deliver(self, msg: Msg, request: QueuedRequest, claimed: Versioned) -> None:
        item = request.item
        # The newest verified version: its facts render the notice and its body checks the proof.
        manifest = self._catalogue.manifest(item.breach_id)
        if manifest is None:
            if self._catalogue.is_retracted(item.breach_id):
                await self._skip(msg, request, claimed)
            else:
                await self._retry_or_bury(
                    msg, request, claimed, dead_letters.UNKNOWN_BREACH, "breach not known yet"
                )
            return
        try:
            contact = open_contact(self._box, item.sealed_contact)
        except ContactError as exc:
            await self._bury(msg, request, claimed, dead_letters.UNOPENABLE, str(exc))
            return
        try:
            # Intake checked it too; the categories are read here, from the proven entry.
            proven = await self._proofs.check(manifest, contact.proof)
        except ProofRefusal as exc:
            await self._bury(msg, request, claimed, dead_letters.UNPROVEN, exc.detail)
            return
        except BreachUnprovableError as exc:
            await self._retry_or_bury(msg, request, claimed, dead_letters.UNPROVEN, str(exc))
            return
        tenant = self._tenants.get(request.tenant)
        sender = Sender(tenant.organisation, tenant.contact_point)
        try:
            context = NoticeContext.for_contact(
                breach_info(manifest), sender, contact, proven.categories
            )
            notice = self._renderer.render(context)
            result = await self._dispatcher.deliver(notice, contact, item.idempotency_key)
        except NoticeError as exc:
            await self._bury(msg, request, claimed, dead_letters.UNRENDERABLE, str(exc))
        except UndeliverableError as exc:
            for failure in exc.failures:
                await self._channel_failed(request, failure.channel, failure.reason)
            await self._bury(msg, request, claimed, dead_letters.UNDELIVERABLE, exc.reason)
        except TransientDeliveryError as exc:
            metrics.TRANSIENT_FAILURES.labels(exc.channel).inc()
            await self._retry_or_bury(msg, request, claimed, dead_letters.EXHAUSTED, str(exc))
        else:
            await self._sent(msg, request, claimed, result)

    async def _sent(
        self, msg: Msg, request: QueuedRequest, claimed: Versioned, result: DeliveryResult
    ) -> None:
        failed = ", ".join(result.failed_channels)
        detail = f"after {failed} failed" if failed else ""
        await self._settle(claimed, state=SENT, channel=result.channel, detail=detail)
        for channel in result.failed_channels:
            await self._channel_failed(request, channel, "refused the address; the next was tried")
        metrics.NOTICES_SENT.labels(result.channel).inc()
        await self._statuses.publish(
            status_for(
                request.tenant, request.item, OutreachStatus.STATE_SENT, result.channel, detail
            ),
            request.round,
        )
        await msg.ack_sync()
        log.info("notice sent", channel=result.channel)

    async def _channel_failed(self, request: QueuedRequest, channel: str, reason: str) -> None:
        metrics.CHANNEL_FAILURES.labels(channel).inc()
        await self._statuses.publish(
            status_for(request.tenant, request.item, OutreachStatus.STATE_FAILED, channel, reason),
            request.round,
        )

    async def _skip(self, msg: Msg, request: QueuedRequest, claimed: Versioned) -> None:
        detail = "breach retracted"
        await self._settle(claimed, state=SKIPPED, detail=detail)
        metrics.SKIPPED.inc()
        await self._statuses.publish(
            status_for(request.tenant, request.item, OutreachStatus.STATE_SKIPPED, detail=detail),
            request.round,
        )
        await msg.ack_sync()
        log.info("notice skipped", reason=detail)

    async def _retry_or_bury(
        self, msg: Msg, request: QueuedRequest, claimed: Versioned, reason: str, detail: str
    ) -> None:
        attempt = request.delivered
        if attempt >= self._config.max_deliver:
            detail = f"gave up after {attempt} attempts: {detail}"
            await self._bury(msg, request, claimed, reason, detail)
            return
        await self._settle(claimed, detail=f"attempt {attempt} failed: {detail}")
        delay = self._config.retry_delay(attempt)
        await msg.nak(delay=delay)
        log.info("delivery will be retried", attempt=attempt, delay=delay, reason=detail)

    async def _bury(
        self,
        msg: Msg,
        request: QueuedRequest,
        current: Versioned | None,
        reason: str,
        detail: str,
    ) -> None:
        """Dead-letter first (deduplicated by sequence), then ledger, status, and terminate."""
        status = status_for(request.tenant, request.item, OutreachStatus.STATE_DEAD, detail=detail)
        await self._dead.publish(subject_token(msg), status, reason, request.sequence)
        if current is not None:
            await self._settle(current, state=DEAD, detail=detail)
        await self._statuses.publish(status, request.round)
        metrics.DEAD_LETTERS.labels(reason).inc()
        await msg.term()
        log.warning("request dead-lettered", reason=reason, detail=detail)

    async def _bury_unreadable(self, msg: Msg, detail: str) -> None:
        """A message that is not a request of ours: no ledger entry, no tenant to tell."""
        status = OutreachStatus(state=OutreachStatus.STATE_DEAD, detail=detail)
        sequence = msg.metadata.sequence.stream
        await self._dead.publish(subject_token(msg), status, dead_letters.UNPARSEABLE, sequence)
        metrics.DEAD_LETTERS.labels(dead_letters.UNPARSEABLE).inc()
        await msg.term()
        log.warning("unreadable request dead-lettered", detail=detail, sequence=sequence)

    async def _settle(self, current: Versioned, **changes: Any) -> None:
        """Write ``changes`` over the entry, riding out conflicts and a short NATS outage.

        After a send, failing to record it would mean sending it again, so NATS
        errors are retried for up to ``ack_wait`` (the time the message stays
        ours anyway). A conflict means another worker touched the entry: if it
        settled it, the notice went out twice and that is logged loudly.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.ack_wait
        while True:
            try:
                await self._ledger.replace(current, current.entry.evolve(**changes))
                return
            except LedgerConflictError:
                latest = await self._ledger.get(current.key)
                if latest is None or latest.entry.terminal:
                    log.error("ledger entry settled by another worker", state=changes.get("state"))
                    return
                current = latest
            except nats.errors.Error as exc:
                if loop.time() >= deadline:
                    raise
                log.warning("ledger write failed; retrying", error=type(exc).__name__)
                await asyncio.sleep(_SETTLE_PAUSE)
