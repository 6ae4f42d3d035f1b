"""The operator's side of a held notice: `breachmatch-notifier held` and `resolve`.

A held notice is made the way the notifier makes one: a worker claims the
entry, records its intent to send over e-mail and falls silent; the next
worker finds the lapsed intent and holds it. The operator lists it, looks up
its Message-ID in the relay's log and records the answer: sent, or not sent —
and then the hospital's next submission queues it again, and it is delivered
once.
"""

from __future__ import annotations

import asyncio
import time

from breachmatch.v1.outreach_pb2 import SubmitOutreachRequest
from breachmatch_notifier.claims import Claim, Verdict, assess, hold_orphan
from breachmatch_notifier.ledger import DEAD, HELD, SENT, Versioned
from breachmatch_notifier.review import NOT_SENT_DETAIL

from .conftest import HOSPITAL, Harness, Patient

BREACH = "alles-2025"
PATIENT = Patient(ref="P-7", name="Mette Holm", email="mette.holm@example.dk")


async def run_cli(harness: Harness, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *harness.notifier_command,
        *args,
        env=harness.worker_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def submitted(harness: Harness) -> Versioned:
    """Submit the patient's notice (no worker running) and return its ledger entry."""
    await harness.publish_breach(BREACH, [PATIENT])
    intake = await harness.start_app(workers_per_process=0)
    item = harness.item(PATIENT, BREACH)
    stub = harness.stub(intake)
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=[item]), timeout=20)
    assert response.receipts[0].accepted
    ref = harness.ledger.patient_ref(HOSPITAL, item.patient_ref, BREACH)
    found = await harness.ledger.get(harness.ledger.outreach_key(HOSPITAL, BREACH, ref))
    assert found is not None
    return found


async def make_held(harness: Harness, current: Versioned, message_id: str) -> Versioned:
    """As a worker that recorded its intent and died leaves it, once the next one looks."""
    holder = await Claim.take(harness.ledger, current, lease=0.0, patience=5.0, attempts=1)
    await holder.commit("email", message_id)
    lapsed = await harness.ledger.get(current.key)
    assert lapsed is not None
    assert assess(lapsed.entry, time.time()) is Verdict.ORPHANED
    return await hold_orphan(harness.ledger, lapsed, patience=5.0)


async def test_the_operator_lists_a_held_notice_and_records_it_as_sent(harness: Harness) -> None:
    current = await submitted(harness)
    message_id = "<0b1f6c2e-6a52-5d0e-8f0e-3b4f1e2d9c77@rigshospitalet.example.dk>"
    await make_held(harness, current, message_id)

    code, out, err = await run_cli(harness, "held")
    assert code == 0
    [line] = out.splitlines()
    assert message_id in line
    assert HOSPITAL in line
    assert BREACH in line
    assert current.entry.ref not in out  # the keyed patient reference stays in the ledger
    assert PATIENT.email not in out + err
    assert "1 held" in err

    code, out, _ = await run_cli(harness, "resolve", message_id, "--sent")
    assert code == 0
    settled = await harness.ledger.get(current.key)
    assert settled is not None
    assert (settled.entry.state, settled.entry.channel) == (SENT, "email")

    code, out, err = await run_cli(harness, "resolve", message_id, "--sent")
    assert code == 1  # nothing held under that Message-ID any more
    assert "no held notice" in err


async def test_a_held_notice_the_relay_never_took_is_submitted_again_and_sent_once(
    harness: Harness,
) -> None:
    current = await submitted(harness)
    held = await make_held(harness, current, "<not-at-the-relay@rigshospitalet.example.dk>")
    assert held.entry.state == HELD

    code, _, _ = await run_cli(harness, "resolve", held.entry.reference, "--not-sent")
    assert code == 0
    dead = await harness.ledger.get(current.key)
    assert dead is not None
    assert (dead.entry.state, dead.entry.detail) == (DEAD, NOT_SENT_DETAIL)

    # The hospital submits it again: a new round, delivered once.
    intake = harness.apps[0]
    item = harness.item(PATIENT, BREACH)
    response = await harness.stub(intake).SubmitOutreach(
        SubmitOutreachRequest(items=[item]), timeout=20
    )
    assert response.receipts[0].accepted
    await harness.start_app(intake=False, workers_per_process=1, ack_wait=1.0)
    entries = await harness.ledger_when(
        BREACH, lambda found: found[item.idempotency_key].state == SENT
    )
    assert entries[item.idempotency_key].round == 2
    assert [message["To"] for message in harness.smtp.messages] == [PATIENT.email]
