"""kill -9 of a `breachmatch-notifier worker`: no notice lost, none sent twice.

Mid-batch: the SMTP sink lets the first recipient through and holds every
later one in RCPT, so when the first SENT lands in the ledger the worker
process has sends in flight that the server has not accepted (claimed, no
intent recorded). It is then killed with SIGKILL (no drain, no acks), the sink
is released, and a second worker takes over: it must deliver each remaining
notice, and skip — not resend — any the dead worker had already recorded as
sent.

Between send and ledger write: the sink takes the message and holds its
answer, so the worker has recorded its intent and the server has the notice,
but the worker has not heard 250 when it is killed. The next worker must not
send it again: it holds it for review, with the Message-ID the operator
reconciles it by, and the hospital sees STATE_HELD.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import GetStatusRequest, OutreachStatus
from breachmatch_notifier.ledger import HELD, SENDING, SENT, LedgerEntry

from .conftest import SETTLE_TIMEOUT, Harness, LogEvents, Patient, contact_data_in

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


async def start_worker(
    harness: Harness, log_path: Path, workers: int
) -> asyncio.subprocess.Process:
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            *harness.notifier_command,
            "worker",
            env=harness.worker_env(
                BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS=str(workers),
                BREACHMATCH_NOTIFIER_ACK_WAIT="1",
            ),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


async def test_killed_worker_mid_batch_delivers_every_notice_exactly_once(
    harness: Harness,
) -> None:
    keys = await harness.queue_notices(BREACH, PATIENTS, PATIENTS)
    harness.smtp.hold_after(1)
    log_path = harness.root / "worker-a.log"
    worker = await start_worker(harness, log_path, workers=3)
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
    await harness.start_app(intake=False, workers_per_process=3, ack_wait=1.0)
    settled = await harness.settled(BREACH, len(PATIENTS))
    assert {entry.state for entry in settled.values()} == {SENT}

    delivered = harness.smtp.by_key()
    assert sorted(delivered) == sorted(keys)
    assert {key: len(copies) for key, copies in delivered.items()} == dict.fromkeys(delivered, 1)
    # The killed worker's log holds no contact data either.
    assert contact_data_in(log_path.read_bytes(), PATIENTS) == []


async def test_killed_between_send_and_ledger_write_the_notice_is_held_not_resent(
    harness: Harness, log_events: LogEvents
) -> None:
    patient = PATIENTS[0]
    [key] = await harness.queue_notices(BREACH, PATIENTS, [patient])
    harness.smtp.hold_answers()
    log_path = harness.root / "worker-b.log"
    worker = await start_worker(harness, log_path, workers=1)
    try:
        # The server has the message; the worker waits for its 250.
        await harness.smtp.wait_until(lambda sink: len(sink.messages) == 1)
        intent = await harness.ledger_when(BREACH, lambda e: e[key].state == SENDING)
        worker.kill()
        assert await asyncio.wait_for(worker.wait(), 10) == -9
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    harness.smtp.release.set()
    [sent] = harness.smtp.messages
    assert intent[key].reference == sent["Message-ID"]

    await harness.start_app(intake=False, workers_per_process=1, ack_wait=1.0)
    held = (await harness.ledger_when(BREACH, lambda e: e[key].state == HELD))[key]
    await log_events.wait_for("notice held for review")
    assert held.reference == sent["Message-ID"]
    assert sent["Message-ID"] in held.detail
    assert await harness.unacknowledged() == 0  # nothing left that could come back
    assert len(harness.smtp.messages) == 1

    intake = harness.apps[0]
    statuses = await harness.stub(intake).GetStatus(GetStatusRequest(breach_id=BREACH), timeout=20)
    [status] = statuses.statuses
    assert (status.state, status.channel) == (OutreachStatus.STATE_HELD, "email")
    assert contact_data_in(held.detail.encode() + log_path.read_bytes(), [patient]) == []
