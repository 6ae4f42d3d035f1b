"""Requests fetched in one batch are still delivered, retried and fenced one by one.

A worker asks JetStream for as many requests as it has free slots and runs
them concurrently (`breachmatch_notifier.worker`). The batch is only how they
arrive: a notice that fails transiently is retried alone, and the others are
sent once and not again; and a batch whose claims lapse while its worker is
held up cannot send what another worker has since claimed — the fencing of
`breachmatch_notifier.claims` holds for every member of the batch.
"""

from __future__ import annotations

from breachmatch_notifier.ledger import SENT

from .conftest import SETTLED_LINE, Harness, LogEvents, Patient

BREACH = "alles-2025"
PATIENTS = [
    Patient(ref=f"P-{n}", name=f"Kirsten Jensen {chr(65 + n)}", email=f"patient{n}@example.dk")
    for n in range(1, 9)
]
BACKED_OFF = "request is held by another worker; backing off"
TAKEN_OVER = "claim taken over before the send; left to its new holder"


async def test_a_batch_member_that_fails_is_retried_alone(
    harness: Harness, log_events: LogEvents
) -> None:
    keys = await harness.queue_notices(BREACH, PATIENTS, PATIENTS)
    unlucky = PATIENTS[3]
    harness.smtp.replies_once[unlucky.email] = "451 4.3.0 try again later"
    # Room for all eight at once: one fetch brings the whole batch.
    await harness.start_app(intake=False, workers_per_process=len(PATIENTS))

    settled = await harness.settled(BREACH, len(PATIENTS))
    await log_events.wait_for(SETTLED_LINE, len(PATIENTS), summing="sent_email")  # once acked
    assert {entry.state for entry in settled.values()} == {SENT}
    retried = harness.item(unlucky, BREACH).idempotency_key
    assert {key: entry.attempts for key, entry in settled.items()} == {
        key: 2 if key == retried else 1 for key in keys
    }
    # The server saw the unlucky address twice and every other one once.
    assert harness.smtp.rcpt_counts == {
        patient.email: 2 if patient is unlucky else 1 for patient in PATIENTS
    }
    delivered = harness.smtp.by_key()
    assert {key: len(copies) for key, copies in delivered.items()} == dict.fromkeys(keys, 1)
    assert await harness.unacknowledged() == 0


async def test_a_batch_whose_claims_lapse_cannot_send_what_another_worker_claimed(
    harness: Harness, log_events: LogEvents
) -> None:
    batch = PATIENTS[:4]
    keys = await harness.queue_notices(BREACH, PATIENTS, batch)
    # The first worker fetches all four; one goes through, three wait in RCPT.
    harness.smtp.hold_after(1)
    await harness.start_app(intake=False, workers_per_process=len(batch), ack_wait=3.0)
    await harness.smtp.wait_until(
        lambda sink: sink.rcpt_seen >= len(batch) and len(sink.messages) == 1
    )

    # A second worker shortens the shared consumer's ack wait below the first's
    # "still working" interval, so the three held requests come to it too. It
    # backs off while the first worker's claims run, and once they lapse (the
    # first worker is still stuck in RCPT) claims and sends them itself.
    await harness.start_app(intake=False, workers_per_process=len(batch), ack_wait=0.5)
    await log_events.wait_for(BACKED_OFF)
    reclaimed = await harness.ledger_when(
        BREACH, lambda e: len(e) == len(batch) and sum(x.attempts == 2 for x in e.values()) == 3
    )
    # While the first worker held them, nothing but its one notice went out.
    assert len(harness.smtp.messages) == 1
    harness.smtp.release.set()

    settled = await harness.settled(BREACH, len(batch))
    await log_events.wait_for(TAKEN_OVER, count=3)
    await log_events.wait_for(SETTLED_LINE, len(batch), summing="sent_email")
    assert {entry.state for entry in settled.values()} == {SENT}
    assert sorted(e.attempts for e in settled.values()) == [1, 2, 2, 2]
    # Each of the three was sent by the worker that claimed it last, under that claim.
    for key, entry in reclaimed.items():
        if entry.attempts == 2:
            assert settled[key].holder == entry.holder
    delivered = harness.smtp.by_key()
    assert {key: len(copies) for key, copies in delivered.items()} == dict.fromkeys(keys, 1)
    assert await harness.unacknowledged() == 0
