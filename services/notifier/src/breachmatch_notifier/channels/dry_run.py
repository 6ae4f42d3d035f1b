"""A channel that delivers nothing and remembers only how much it would have sent.

Demos and routing tests need the whole path (routing, fallback, rate limits,
ledger) without an SMTP server or a gateway. The log keeps counts per channel
name and nothing else — no addresses, no text — so a dry run is as safe to
leave running as the real thing. A `DryRunChannel` can stand in under any
channel name ("email", "sms", ...), so routing decisions show in the counts.
"""

from __future__ import annotations

from collections import Counter

from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels.base import (
    DRY_RUN,
    Channel,
    DeliveryResult,
    SendIntent,
    message_uuid,
)
from breachmatch_notifier.notice import Notice


class DryRunLog:
    """Counts of notices "sent" per channel name, shared by the dry-run channels."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def record(self, channel: str) -> None:
        self._counts[channel] += 1

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


class DryRunChannel(Channel):
    #: Nothing goes anywhere, so a repeat harms no one: like a deduplicating provider.
    deduplicates = True
    #: It reads no part of the notice, so none is rendered.
    parts = ()

    def __init__(self, log: DryRunLog, name: str = DRY_RUN) -> None:
        super().__init__(name)
        self.log = log

    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        reference = str(message_uuid(idempotency_key))
        self.log.record(self.name)
        return DeliveryResult(
            channel=self.name, idempotency_key=idempotency_key, reference=reference
        )
