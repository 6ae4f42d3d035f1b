"""Status events: what happened to each notice, told back to the hospital that asked.

Each change (queued, sent, failed on one channel, dead, skipped) is an
`OutreachStatus` on ``breachmatch.outreach.status.<tenant>`` in stream
OUTREACH_STATUS. A tenant's WatchStatus reads only its own subject, from just
after the last sequence it saw, so a hospital that reconnects misses nothing.

An event carries the item's opaque patient ref (an HMAC under the hospital's
key: intake refuses raw refs, so the stream holds no patient id or CPR
number), the breach id, the idempotency key, the channel and a reason — never
a contact detail: the reasons come from channel errors, which are written to
hold none.

Events are published with a ``Nats-Msg-Id`` made of the item, its ledger
round, state and channel, so re-emitting an event after a crash (the worker does, when it finds
an entry already settled) is dropped as a duplicate within the stream's window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import OutreachItem, OutreachStatus
from breachmatch_notifier.ledger import now_text

_DEDUP_HEADER = "Nats-Msg-Id"


def status_for(
    tenant: str,
    item: OutreachItem,
    state: OutreachStatus.State.ValueType,
    channel: str = "",
    detail: str = "",
) -> OutreachStatus:
    """The event for one item; ``detail`` must hold no contact data."""
    return OutreachStatus(
        tenant=tenant,
        patient_ref=item.patient_ref,
        breach_id=item.breach_id,
        idempotency_key=item.idempotency_key,
        state=state,
        channel=channel,
        detail=detail,
        updated_at=now_text(),
    )


def status_subject(tenant: str) -> str:
    return bus.subject_for(bus.OUTREACH_STATUS, bus.tenant_token(tenant))


class StatusEvents:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(self, status: OutreachStatus, round: int) -> None:
        """Publish and wait for the stream's ack; ``round`` is the ledger round of the item."""
        state = OutreachStatus.State.Name(status.state)
        msg_id = ":".join(
            (
                bus.tenant_token(status.tenant),
                status.idempotency_key,
                str(round),
                state,
                status.channel,
            )
        )
        await self._js.publish(
            status_subject(status.tenant),
            status.SerializeToString(),
            stream=bus.STREAM_OUTREACH_STATUS,
            headers={_DEDUP_HEADER: msg_id},
        )

    async def newest_sequence(self) -> int:
        """The stream sequence of the newest status event (0 when there is none)."""
        info = await self._js.stream_info(bus.STREAM_OUTREACH_STATUS)
        return int(info.state.last_seq)

    async def watch(
        self, tenant: str, after_sequence: int, until: asyncio.Event
    ) -> AsyncIterator[tuple[int, OutreachStatus]]:
        """``tenant``'s events after ``after_sequence`` (stream sequence), then live ones.

        Ends when ``until`` is set (the service is stopping) or the caller stops iterating.
        """
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if after_sequence:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_sequence + 1
            )
        subscription = await self._js.subscribe(
            status_subject(tenant),
            stream=bus.STREAM_OUTREACH_STATUS,
            ordered_consumer=True,
            config=config,
        )
        messages = subscription.messages
        stopped = asyncio.ensure_future(until.wait())
        arrival: asyncio.Future[Msg] | None = None
        try:
            while True:
                arrival = asyncio.ensure_future(anext(messages))
                await asyncio.wait({arrival, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not arrival.done():
                    return
                try:
                    msg = arrival.result()
                except StopAsyncIteration:  # unsubscribed underneath us
                    return
                yield msg.metadata.sequence.stream, OutreachStatus.FromString(msg.data)
        finally:
            for pending in (arrival, stopped):
                if pending is not None:
                    pending.cancel()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
