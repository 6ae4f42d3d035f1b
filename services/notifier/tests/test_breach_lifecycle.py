"""Breach versions and signed retractions, as the notifier sees them (real NATS, mTLS, SMTP).

Each attack is published straight onto stream BREACHES, as an intruder with
access to NATS would: a replayed older manifest, an unsigned retraction, a
signed retraction of an older version, a publication signed by a stranger.
None may change what a notice says, stop a notice, or send an alert.
"""

from __future__ import annotations

import grpc
import grpc.aio
import nacl.signing
import pytest

from breachmatch import refusals
from breachmatch.v1.outreach_pb2 import SubmitOutreachRequest
from breachmatch_dev.breach_events import (
    make_manifest,
    publication,
    publish_event,
    unsigned_retraction,
)

from .conftest import ALERT_EMAIL, Harness, Patient, write_tenants

BREACH = "alles-2025"
RPC_TIMEOUT = 20.0
DANISH = Patient(ref="P-da", name="Signe Østergaard", email="signe@example.dk", language="da")
ENGLISH = Patient(ref="P-en", name="John Whitfield", email="john@example.co.uk", language="en")
CORRECTED = {
    "da": "Rettet: journaler og CPR-numre blev kopieret.",
    "en": "Corrected: records and CPR numbers were copied.",
}


async def test_notices_come_from_the_newest_version_whatever_is_replayed(
    harness: Harness,
) -> None:
    # Only the newest version's filter holds the patients: a proof checked against the
    # first (or its replay) would be refused, so acceptance shows which version was used.
    first = await harness.publish_breach(BREACH, title="Gammel titel", organisation="Forkert ApS")
    await harness.publish_breach(
        BREACH, [DANISH, ENGLISH], title="Rettet titel", organisation="Alles Lægehus ApS",
        descriptions=CORRECTED, version=2,
    )  # fmt: skip
    await publish_event(harness.js, first)  # the old manifest again, validly signed
    await publish_event(harness.js, unsigned_retraction(BREACH))
    await harness.retract_breach(BREACH, version=1)  # signed, but of the superseded version
    app = await harness.start_app()  # replays the stream to its end before it serves

    stub = harness.stub(app)
    items = [harness.item(patient, BREACH) for patient in (DANISH, ENGLISH)]
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT)
    assert [receipt.accepted for receipt in response.receipts] == [True, True]
    await harness.settled(BREACH, 2)
    for patient, own, other in ((DANISH, "da", "en"), (ENGLISH, "en", "da")):
        (message,) = harness.smtp.to(patient.email)
        text = str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        assert "Rettet titel" in text
        assert "Alles Lægehus ApS" in text
        assert "Gammel titel" not in text
        assert "Forkert ApS" not in text
        assert CORRECTED[own] in text.replace("\r\n", "\n")
        assert CORRECTED[other] not in text.replace("\r\n", "\n")


async def test_a_signed_retraction_refuses_the_batch_and_says_why(harness: Harness) -> None:
    await harness.publish_breach(BREACH)
    await harness.retract_breach(BREACH)
    app = await harness.start_app(workers_per_process=0)
    stub = harness.stub(app)
    for breach_id, code, state in (
        (BREACH, grpc.StatusCode.FAILED_PRECONDITION, refusals.RETRACTED),
        ("never-published", grpc.StatusCode.NOT_FOUND, refusals.UNKNOWN),
    ):
        request = SubmitOutreachRequest(items=[harness.item(DANISH, breach_id)])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitOutreach(request, timeout=RPC_TIMEOUT)
        assert refused.value.code() == code
        assert refusals.breach_state(refused.value) == state
    assert await harness.ledger.entries("hospital-a") == []


async def test_only_a_current_signed_publication_is_alerted(harness: Harness) -> None:
    write_tenants(harness.tenants_file, alert_email=ALERT_EMAIL)
    await harness.publish_breach("withdrawn-2025", title="Trukket tilbage")
    await harness.retract_breach("withdrawn-2025")
    stranger = nacl.signing.SigningKey.generate()
    forged = publication(make_manifest("forged-2025", title="Falsk læk"), stranger)
    await publish_event(harness.js, forged)
    await harness.start_app()
    await harness.publish_breach("real-2025", title="Ægte læk")
    # One alert worker handles the events in order: once the last one is alerted,
    # the retracted and the forged publication before it were handled too.
    await harness.smtp.wait_until(lambda sink: len(sink.messages) >= 1)
    subjects = [message["Subject"] for message in harness.smtp.to(ALERT_EMAIL)]
    assert len(subjects) == 1
    assert "Ægte læk" in subjects[0]
