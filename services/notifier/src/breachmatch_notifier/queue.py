"""The outreach work queue: how a request travels from intake to a worker.

A request is an `OutreachItem` (patient ref, breach id, idempotency key, the
sealed contact) on ``breachmatch.outreach.request.<tenant>`` in the
work-queue stream OUTREACH; the tenant id itself rides in a header because a
subject token is only its encoded form. Work-queue retention deletes the
message when a worker acknowledges it, so the sealed contact lives in NATS
only until the notice is delivered (or given up on).

``Nats-Msg-Id`` is the ledger key plus the ledger round (also in a header,
so status events of a later round are not taken for repeats of the first), not the hospital's
idempotency key: the stream then deduplicates exactly what the ledger makes
unique (one request per tenant, patient and breach), and two tenants that
happen to choose the same idempotency key cannot swallow each other's request.

All workers, in any number of processes, bind the one durable pull consumer
`bus.CONSUMER_NOTIFIER_WORKERS`. It redelivers without limit: attempts are
counted in the ledger, one per claim (`breachmatch_notifier.claims`), and a
request is dead-lettered on the claim after its last attempt — so a request
that crashes its worker every time still ends up in dead letters, while the
deliveries a worker only backs off from (another's claim still running) count
for nothing. A JetStream limit would instead leave such a request stuck,
neither delivered nor dead-lettered, once it ran out.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import OutreachItem

TENANT_HEADER = "Breachmatch-Tenant"
#: The ledger round this message belongs to (1, then +1 per resubmission of a dead entry).
ROUND_HEADER = "Breachmatch-Round"
_DEDUP_HEADER = "Nats-Msg-Id"


class RequestFormatError(ValueError):
    """A work-queue message that is not a request this notifier wrote."""


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    tenant: str
    item: OutreachItem
    round: int
    #: Stream sequence of the message: identifies this round of the request.
    sequence: int


async def publish_request(
    js: JetStreamContext, tenant: str, item: OutreachItem, ledger_key: str, round: int
) -> PubAck:
    """Put ``item`` on the queue and wait until the stream has stored it."""
    return await js.publish(
        bus.subject_for(bus.OUTREACH_REQUEST, bus.tenant_token(tenant)),
        item.SerializeToString(),
        stream=bus.STREAM_OUTREACH,
        headers={
            TENANT_HEADER: tenant,
            ROUND_HEADER: str(round),
            _DEDUP_HEADER: f"{ledger_key}:{round}",
        },
    )


def subject_token(msg: Msg) -> str:
    """The tenant token of a request's subject (for dead letters of unreadable requests)."""
    return msg.subject.rpartition(".")[2]


def read_request(msg: Msg) -> QueuedRequest:
    headers = msg.headers or {}
    tenant = headers.get(TENANT_HEADER, "")
    if not tenant or bus.tenant_token(tenant) != subject_token(msg):
        raise RequestFormatError("request without a tenant matching its subject")
    round_text = headers.get(ROUND_HEADER, "")
    if not round_text.isdigit():
        raise RequestFormatError("request without its ledger round")
    try:
        item = OutreachItem.FromString(msg.data)
    except DecodeError:
        raise RequestFormatError("request is not an OutreachItem") from None
    if not (item.patient_ref and item.breach_id and item.idempotency_key):
        raise RequestFormatError("request lacks its patient ref, breach id or idempotency key")
    return QueuedRequest(tenant, item, int(round_text), msg.metadata.sequence.stream)


def worker_consumer_config(ack_wait: float) -> ConsumerConfig:
    return ConsumerConfig(
        name=bus.CONSUMER_NOTIFIER_WORKERS,
        durable_name=bus.CONSUMER_NOTIFIER_WORKERS,
        filter_subject=bus.OUTREACH_REQUEST + ".>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=-1,
    )
