"""After a full run, no contact detail or raw patient ref is in the NATS store or any log.

The run covers every path that touches a contact: e-mail, SMS, Digital Post,
fallback after a refused address, a dead letter, an item refused at intake,
status queries and watches. Then the notifier and the nats-server are stopped
(so everything is flushed to disk) and every file of the JetStream store (the
streams and the KV buckets), the server's log and every captured log line are
searched for each test contact value in the forms it could take (as given,
lower- and upper-case, E.164, digits only, CPR with and without the dash),
UTF-8 and UTF-16 — and for each patient's own ref, one of which is the
patient's CPR number, as Danish exports often have it. Only the opaque refs
(HMACs under the hospital's key) may be there.

Not searched: the Digital Post outbox — it is the hand-off to the Digital
Post gateway and must hold the recipient's CPR number — and the SMTP server
and SMS gateway, which are the recipients' side.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from breachmatch import logs
from breachmatch.v1.outreach_pb2 import (
    GetStatusRequest,
    OutreachItem,
    SubmitOutreachRequest,
    WatchStatusRequest,
)
from breachmatch_notifier.ledger import DEAD, SENT

from .conftest import Harness, Patient, contact_data_in, opaque_ref, read_event

BREACH = "alles-2025"
PATIENTS = [
    Patient(
        ref="PRIV-1",
        name="Birgitte Ærø-Sørensen",
        email="Birgitte.Aeroe@Example.dk",
        postal_address="Strandvejen 12, 2900 Hellerup",
    ),
    Patient(
        ref="PRIV-2",
        name="Henrik Lund",
        phone="+45 31 41 59 26",
        channels=("sms",),
        language="en",
    ),
    Patient(
        ref="1503724321",  # the CPR number as the patient id
        name="Jytte Holm",
        cpr="150372-4321",
        postal_address="Bakkevej 3, 8000 Aarhus C",
        channels=("digital_post",),
    ),
    Patient(
        ref="PRIV-4",
        name="Ulrik Refuseret",
        email="ulrik.refuseret@example.dk",
        phone="+45 27 18 28 18",
    ),
    Patient(ref="PRIV-5", name="Vera Væk", email="vera.vaek@example.dk"),
]
KEYS = [f"key-{number}" for number in range(1, len(PATIENTS) + 1)]


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as the JSON the service writes; restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    smtp_log = logging.getLogger("mail.log")  # the test SMTP server's own conversation log
    saved_smtp_level = smtp_log.level
    buffer = io.StringIO()
    logs.configure_logging("notifier", level="DEBUG", fmt="json", stream=buffer)
    smtp_log.setLevel(logging.WARNING)
    try:
        yield buffer
    finally:
        smtp_log.setLevel(saved_smtp_level)
        structlog.configure(**saved_structlog)
        root.handlers, root.level = saved_handlers, saved_level


async def test_no_contact_detail_or_raw_ref_in_the_nats_store_or_the_logs(
    harness: Harness, captured_logs: io.StringIO
) -> None:
    for refused in (PATIENTS[3], PATIENTS[4]):
        harness.smtp.replies[refused.email] = "550 5.1.1 mailbox unavailable"
    await harness.publish_breach(BREACH, PATIENTS)
    app = await harness.start_app()
    stub = harness.stub(app)
    items = [
        harness.item(patient, BREACH, key) for patient, key in zip(PATIENTS, KEYS, strict=True)
    ]
    poison = OutreachItem(
        patient_ref=opaque_ref("PRIV-poison"),
        breach_id=BREACH,
        idempotency_key="key-poison",
        sealed_contact=os.urandom(200),
    )
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=[*items, poison]), timeout=20)
    assert [receipt.accepted for receipt in response.receipts] == [True] * len(items) + [False]
    settled = await harness.settled(BREACH, len(items))
    assert {key: (entry.state, entry.channel) for key, entry in settled.items()} == {
        "key-1": (SENT, "email"),
        "key-2": (SENT, "sms"),
        "key-3": (SENT, "digital_post"),
        "key-4": (SENT, "sms"),
        "key-5": (DEAD, ""),
    }
    statuses = await stub.GetStatus(GetStatusRequest(breach_id=BREACH), timeout=20)
    assert len(statuses.statuses) == len(items)
    watched = stub.WatchStatus(WatchStatusRequest(), timeout=20)
    assert (await read_event(watched)).sequence > 0
    watched.cancel()

    await app.stop()
    harness.nats.stop()
    stored = b"".join(
        path.read_bytes() for path in sorted(harness.nats.store_dir.rglob("*")) if path.is_file()
    )
    # The search works: what is meant to be stored (status events, dead letters) is found.
    assert PATIENTS[4].opaque_ref.encode() in stored
    assert b"key-3" in stored
    refs = [patient.ref.encode() for patient in PATIENTS]
    assert [ref for ref in refs if ref in stored] == []
    assert contact_data_in(stored, PATIENTS) == []
    assert contact_data_in(harness.nats.log_path.read_bytes(), PATIENTS) == []

    log_text = captured_logs.getvalue().encode("utf-8")
    batches = [json.loads(line) for line in log_text.splitlines() if b'"messages settled"' in line]
    assert sum(n for b in batches for k, n in b.items() if k.startswith("sent_")) == 4
    assert b"request dead-lettered" in log_text
    assert [ref for ref in refs if ref in log_text] == []
    assert contact_data_in(log_text, PATIENTS) == []
