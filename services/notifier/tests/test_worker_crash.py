"""kill -9 of a `breachmatch-notifier worker` mid-batch: every notice still goes out once.

The SMTP sink lets the first recipient through and holds every later one in
RCPT, so when the first SENT lands in the ledger the worker process has sends
in flight that the server has not accepted. It is then killed with SIGKILL
(no drain, no acks), the sink is released, and a second worker takes over:
it must deliver each remaining notice, and skip — not resend — any the dead
worker had already recorded as sent.
"""

from __future__ import annotations

import asyncio

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import SubmitOutreachRequest
from breachmatch_notifier.ledger import SENT, LedgerEntry

from .conftest import SETTLE_TIMEOUT, Harness, Patient, contact_data_in

BREACH = "alles-2025"
PATIENTS = [
    Patient(
        ref=f"P-{n}", name=f"Kirsten Jensen {chr(65 + n)}", email=f"kirsten.jensen{n}@example.dk"
    )
    for n in range(1, 7)
]


async def first_sent(harness: Harness) -> LedgerEntry:
    """The first ledger entry of the breach to reach SENT, as it happens."""
    kv = await bus.key_value(harness.js, bus.KV_OUTREACH_LEDGER)
    watcher = await kv.watch(f"outreach.hospital-a.{BREACH}.>")
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            async for update in watcher:
                if update is not None and update.value:
                    entry = LedgerEntry.from_bytes(update.value)
                    if entry.state == SENT:
                        return entry
    finally:
        await watcher.stop()
    raise AssertionError("the watcher ended without a SENT entry")


async def test_killed_worker_mid_batch_delivers_every_notice_exactly_once(
    harness: Harness,
) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    intake = await harness.start_app(workers_per_process=0)
    items = [harness.item(patient, BREACH) for patient in PATIENTS]
    response = await harness.stub(intake).SubmitOutreach(
        SubmitOutreachRequest(items=items), timeout=20
    )
    assert all(receipt.accepted for receipt in response.receipts)

    harness.smtp.hold_after(1)
    log_path = harness.root / "worker-a.log"
    with log_path.open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            *harness.notifier_command,
            "worker",
            env=harness.worker_env(
                BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS="3", BREACHMATCH_NOTIFIER_ACK_WAIT="2"
            ),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        sent = await first_sent(harness)
        # The other sends of that worker are held in RCPT: kill it mid-batch.
        await harness.smtp.wait_until(lambda sink: sink.rcpt_seen >= 2)
        worker.kill()
        assert await asyncio.wait_for(worker.wait(), 10) == -9
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert len(harness.smtp.messages) == 1
    assert harness.smtp.messages[0]["X-Breachmatch-Idempotency-Key"] == sent.idempotency_key

    harness.smtp.release.set()
    await harness.start_app(intake=False, workers_per_process=3, ack_wait=2.0)
    settled = await harness.settled(BREACH, len(PATIENTS))
    assert {entry.state for entry in settled.values()} == {SENT}

    delivered = harness.smtp.by_key()
    assert sorted(delivered) == sorted(item.idempotency_key for item in items)
    assert {key: len(copies) for key, copies in delivered.items()} == dict.fromkeys(delivered, 1)
    # The killed worker's log holds no contact data either.
    assert contact_data_in(log_path.read_bytes(), PATIENTS) == []
