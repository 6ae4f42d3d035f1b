"""Dead letters: notices the notifier gave up on, for an operator to look at.

A request is dead when it can never be delivered as it is — its sealed
contact does not open or proves no match, it is not a request at all, no
channel takes it, or its delivery attempts are used up. The work-queue message is terminated (so
JetStream stops redelivering it) and an `OutreachStatus` saying why goes to
``breachmatch.outreach.dead.<tenant>`` in stream OUTREACH_DEAD.

The sealed contact is *not* copied there: a dead letter is kept for weeks and
must not become a store of contact details (docs/architecture.md, promise 5). The
hospital can submit the same item again, which re-queues a dead entry.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import OutreachStatus

#: Header naming the work-queue stream sequence of the request that died.
REQUEST_SEQUENCE_HEADER = "Breachmatch-Request-Sequence"
#: Header with the short reason code (also the metric label).
REASON_HEADER = "Breachmatch-Dead-Reason"

#: Reason codes: fixed strings, so they are safe as metric labels.
UNPARSEABLE = "unparseable_request"
NO_LEDGER_ENTRY = "no_ledger_entry"
UNOPENABLE = "unopenable_contact"
UNRENDERABLE = "unrenderable_notice"
UNDELIVERABLE = "undeliverable"
EXHAUSTED = "attempts_exhausted"
UNKNOWN_BREACH = "unknown_breach"
UNPROVEN = "unproven_match"


class DeadLetters:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(
        self, tenant_token: str, status: OutreachStatus, reason: str, request_sequence: int
    ) -> None:
        """Record a dead request; ``status.detail`` must hold no contact data."""
        await self._js.publish(
            bus.subject_for(bus.OUTREACH_DEAD, tenant_token),
            status.SerializeToString(),
            stream=bus.STREAM_OUTREACH_DEAD,
            headers={
                REASON_HEADER: reason,
                REQUEST_SEQUENCE_HEADER: str(request_sequence),
                "Nats-Msg-Id": f"dead:{request_sequence}",
            },
        )
