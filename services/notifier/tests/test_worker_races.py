"""Two live workers, one request: the claim keeps the second from sending what the first holds.

JetStream hands a request to another worker when the first has been quiet for
the consumer's ack wait — a pause, or NATS itself gone for a while — even
though the first still holds it. Here that is made to happen for real: the
first worker keeps its request alive only every 10 s (its own 30 s ack wait)
while the shared consumer, as the second worker configured it, redelivers
after 1 s. The second worker must find the claim running and back off; the
first sends and records the notice once. Then the same through a nats-server
killed while the first worker writes SENT: it keeps trying until NATS is back.
"""

from __future__ import annotations

from breachmatch.v1.outreach_pb2 import SubmitOutreachRequest
from breachmatch_notifier.ledger import SENT

from .conftest import SETTLED_LINE, Harness, LogEvents, Patient

BREACH = "alles-2025"
PATIENT = Patient(ref="P-1", name="Kirsten Jensen", email="kirsten.jensen@example.dk")
BACKED_OFF = "request is held by another worker; backing off"


async def submit_one(harness: Harness) -> str:
    await harness.publish_breach(BREACH, [PATIENT])
    intake = await harness.start_app(workers_per_process=0)
    item = harness.item(PATIENT, BREACH)
    response = await harness.stub(intake).SubmitOutreach(
        SubmitOutreachRequest(items=[item]), timeout=20
    )
    assert response.receipts[0].accepted
    return item.idempotency_key


async def test_a_request_redelivered_while_its_holder_lives_is_not_sent_twice(
    harness: Harness, log_events: LogEvents
) -> None:
    harness.smtp.hold_after(0)  # the first worker's session waits in RCPT
    await harness.start_app(intake=False, workers_per_process=1, ack_wait=30.0)
    key = await submit_one(harness)
    await harness.smtp.wait_until(lambda sink: sink.rcpt_seen >= 1)

    await harness.start_app(intake=False, workers_per_process=1, ack_wait=1.0)
    await log_events.wait_for(BACKED_OFF)
    harness.smtp.release.set()

    entries = await harness.ledger_when(BREACH, lambda e: e[key].state == SENT)
    await log_events.wait_for(SETTLED_LINE, 1, summing="sent_email")
    assert entries[key].attempts == 1  # one claim: the second worker never took it
    assert [message["To"] for message in harness.smtp.messages] == [PATIENT.email]
    assert log_events.counts["ledger entry settled by another worker"] == 0
    assert await harness.unacknowledged() == 0


async def test_a_nats_restart_while_the_holder_records_sent(
    harness: Harness, log_events: LogEvents
) -> None:
    harness.smtp.hold_answers()  # the message is taken; the 250 waits
    await harness.start_app(intake=False, workers_per_process=1, ack_wait=30.0)
    key = await submit_one(harness)
    await harness.smtp.wait_until(lambda sink: len(sink.messages) == 1)
    await harness.start_app(intake=False, workers_per_process=1, ack_wait=1.0)

    harness.nats.kill9()
    harness.smtp.release.set()  # the holder hears 250 and cannot write SENT
    await log_events.wait_for("ledger write failed; retrying")
    harness.nats.start()

    entries = await harness.ledger_when(BREACH, lambda e: e[key].state == SENT)
    await log_events.wait_for(SETTLED_LINE, 1, summing="sent_email")
    assert entries[key].attempts == 1
    assert len(harness.smtp.messages) == 1
    assert await harness.unacknowledged() == 0
