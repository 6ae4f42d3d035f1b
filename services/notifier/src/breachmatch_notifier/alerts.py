"""New-breach alerts: tell each hospital's contact that a breach is ready to check.

A hospital learns of a new breach by polling or watching the matcher; this
e-mail is the nudge for those that do neither. It goes to the tenant's
``alert_email`` from the tenants file, over the e-mail channel only, and is a
short fixed text in the tenant's language: the breach's title, organisation,
id and date, and that it is ready to be checked. It carries no link and asks
for nothing, like every notice, and no patient data (there is none yet).

The alerts consumer is durable, so a breach published while no notifier runs
is announced when one starts; each (tenant, breach) gets its ledger entry,
claimed before the send and settled after it like a patient notice's
(`breachmatch_notifier.claims`), so a redelivered or re-published event
alerts nobody twice, and an alert whose send was cut off after the point of
no return is held for review rather than sent again. An event is alerted
only once the breach catalogue has applied it and holds it as the breach's
current version: an unsigned, replayed, superseded or already retracted
publication alerts nobody.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping

import nacl.signing
import nats.errors
from markupsafe import escape
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from breachmatch import bus, logs
from breachmatch.filter import BreachEventError, read_breach_event
from breachmatch.tenants import Tenant, Tenants
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier import metrics
from breachmatch_notifier.breaches import BreachCatalogue, breach_info
from breachmatch_notifier.channels import (
    EMAIL,
    DeliveryOutcomeUnknownError,
    Dispatcher,
    TransientDeliveryError,
    UndeliverableError,
)
from breachmatch_notifier.claims import Claim, ClaimLostError, Verdict, assess, hold_orphan
from breachmatch_notifier.config import NotifierConfig
from breachmatch_notifier.ledger import DEAD, SENT, Ledger, LedgerEntry
from breachmatch_notifier.notice import BreachInfo, Notice
from breachmatch_notifier.worker import keep_alive

log = logs.get_logger(__name__)

SENDER = "breachmatch"
_FALLBACK_LANGUAGE = "en"


#: (subject, lines) per language; {title}, {organisation}, {breach_id}, {added} are filled in.
ALERT_TEXTS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "da": (
        "Nyt databrud klar til kontrol: {title}",
        (
            "Et nyt databrud er offentliggjort i breachmatch og kan nu kontrolleres mod "
            "jeres patienter.",
            "Databrud: {title}",
            "Ramt organisation: {organisation}",
            "Brud-id: {breach_id}",
            "Tilføjet: {added}",
            "Kør jeres breachmatch-kontrol for dette brud. Beskeden indeholder ingen "
            "patientoplysninger.",
        ),
    ),
    "en": (
        "New breach ready to check: {title}",
        (
            "A new breach has been published in breachmatch and can now be checked against "
            "your patients.",
            "Breach: {title}",
            "Breached organisation: {organisation}",
            "Breach id: {breach_id}",
            "Added: {added}",
            "Run your breachmatch check for this breach. This message holds no patient data.",
        ),
    ),
}


def alert_notice(breach: BreachInfo, language: str) -> Notice:
    """The fixed alert text about ``breach`` in ``language`` (English if not offered)."""
    chosen = language if language in ALERT_TEXTS else _FALLBACK_LANGUAGE
    subject, lines = ALERT_TEXTS[chosen]
    values = {
        "title": breach.title,
        "organisation": breach.organisation,
        "breach_id": breach.breach_id,
        "added": breach.added_date.isoformat(),
    }
    filled = [line.format(**values) for line in lines]
    text = "\n\n".join(filled) + "\n"
    html = "".join(f"<p>{escape(line)}</p>" for line in filled)
    title = subject.format(**values)
    return Notice(
        language=chosen,
        sender=SENDER,
        subject=title,
        text=text,
        html=f'<!DOCTYPE html><html lang="{chosen}"><body>{html}</body></html>\n',
        sms_text=title,
        digital_post_text=text,
    )


def alerts_consumer_config(ack_wait: float, max_deliver: int) -> ConsumerConfig:
    """The durable consumer of BREACH_PUBLISHED that every notifier process shares."""
    return ConsumerConfig(
        name=bus.CONSUMER_NOTIFIER_ALERTS,
        durable_name=bus.CONSUMER_NOTIFIER_ALERTS,
        filter_subject=bus.BREACH_PUBLISHED,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )


def alert_idempotency_key(ledger_key: str) -> str:
    """A short, header-safe key per (tenant, breach), stable across replicas."""
    return "alert-" + hashlib.sha256(ledger_key.encode()).hexdigest()[:32]


class BreachAlerts:
    """The `worker.Handler` of the BREACH_PUBLISHED consumer."""

    def __init__(
        self,
        *,
        config: NotifierConfig,
        ledger: Ledger,
        tenants: Tenants,
        dispatcher: Dispatcher,
        verify_key: nacl.signing.VerifyKey,
        catalogue: BreachCatalogue,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._recipients = [tenant for tenant in tenants.known.values() if tenant.alert_email]
        self._dispatcher = dispatcher
        self._verify_key = verify_key
        self._catalogue = catalogue

    async def handle(self, msg: Msg) -> None:
        try:
            checked = read_breach_event(msg.data, self._verify_key)
        except BreachEventError as exc:
            log.warning("breach event not alerted", reason=exc.reason)
            await msg.term()
            return
        if checked.manifest is None:  # a retraction: nothing to alert
            await msg.ack()
            return
        try:
            async with asyncio.timeout(self._config.ack_wait / 3):
                await self._catalogue.applied(msg.metadata.sequence.stream)
        except TimeoutError:
            await msg.nak(delay=self._config.retry_delay(msg.metadata.num_delivered))
            return
        if not self._catalogue.is_current(checked.breach_id, checked.manifest_sha256):
            log.warning("breach event not alerted", reason="not_current")
            await msg.ack()
            return
        breach = breach_info(checked.manifest)
        try:
            async with keep_alive(msg, self._config.ack_wait / 3):
                for tenant in self._recipients:
                    await self._alert(tenant, breach)
        except TransientDeliveryError as exc:
            attempt = msg.metadata.num_delivered
            if attempt >= self._config.max_deliver:
                metrics.BREACH_ALERTS.labels("failed").inc()
                log.error("breach alert given up", breach_id=breach.breach_id, reason=exc.reason)
                await msg.term()
            else:
                metrics.BREACH_ALERTS.labels("retry").inc()
                await msg.nak(delay=self._config.retry_delay(attempt))
            return
        await msg.ack_sync()

    async def _alert(self, tenant: Tenant, breach: BreachInfo) -> None:
        """Alert one tenant unless the ledger says it was done; raises only transient errors."""
        key = self._ledger.alert_key(tenant.tenant_id, breach.breach_id)
        idempotency_key = alert_idempotency_key(key)
        current = await self._ledger.get(key) or await self._ledger.create(
            key, LedgerEntry.new(tenant.tenant_id, breach.breach_id, "", idempotency_key)
        )
        if current is None:
            return  # another replica is creating it right now
        config = self._config
        verdict = assess(current.entry, time.time())
        if verdict is Verdict.SETTLED:
            return
        if verdict is Verdict.BUSY:
            raise TransientDeliveryError(EMAIL, "another worker holds this alert")
        try:
            if verdict is Verdict.ORPHANED:
                await hold_orphan(self._ledger, current, patience=config.ack_wait)
                metrics.BREACH_ALERTS.labels("held").inc()
                log.warning("breach alert held for review", tenant=tenant.tenant_id)
                return
            claim = await Claim.take(
                self._ledger,
                current,
                lease=config.claim_lease,
                patience=config.ack_wait,
                attempts=current.entry.attempts + 1,
            )
        except ClaimLostError:
            return  # another worker took it over and will settle it
        contact = ContactDetails(
            email=tenant.alert_email, language=tenant.language, channels=[EMAIL]
        )
        notice = alert_notice(breach, tenant.language)
        try:
            result = await self._dispatcher.deliver(notice, contact, idempotency_key, claim)
        except UndeliverableError as exc:
            metrics.BREACH_ALERTS.labels("failed").inc()
            log.warning("breach alert undeliverable", tenant=tenant.tenant_id, reason=exc.reason)
            await claim.settle(DEAD, detail=exc.reason)
        except DeliveryOutcomeUnknownError as exc:
            metrics.BREACH_ALERTS.labels("held").inc()
            log.warning("breach alert held for review", tenant=tenant.tenant_id, reason=exc.reason)
            await claim.hold(exc.reason)
        except ClaimLostError:
            log.warning("breach alert taken over before the send", tenant=tenant.tenant_id)
        except TransientDeliveryError as exc:
            await claim.release(f"attempt failed: {exc.reason}")
            raise
        except nats.errors.Error:
            # The intent could not be recorded, so nothing was sent.
            await claim.release("attempt failed: ledger unavailable")
            raise
        else:
            metrics.BREACH_ALERTS.labels("sent").inc()
            log.info("breach alert sent", tenant=tenant.tenant_id, breach_id=breach.breach_id)
            await claim.settle(SENT, channel=result.channel)
