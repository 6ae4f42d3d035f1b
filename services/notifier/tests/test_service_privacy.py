"""After a full run, no contact detail is in the NATS store or in any log line.

The run covers every path that touches a contact: e-mail, SMS, Digital Post,
fallback after a refused address, a poison request, status queries and
watches. Then the notifier and the nats-server are stopped (so everything is
flushed to disk) and every file of the JetStream store, the server's log and
every captured log line are searched for each test contact value in the forms
it could take (as given, lower- and upper-case, E.164, digits only, CPR with
and without the dash), UTF-8 and UTF-16.

Not searched: the Digital Post outbox — it is the hand-off to the Digital
Post gateway and must hold the recipient's CPR number — and the SMTP server
and SMS gateway, which are the recipients' side.
"""

from __future__ import annotations

import io
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

from .conftest import Harness, Patient, contact_data_in, read_event

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
        ref="PRIV-3",
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
]


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


async def test_no_contact_detail_in_the_nats_store_or_the_logs(
    harness: Harness, captured_logs: io.StringIO
) -> None:
    harness.smtp.replies[PATIENTS[3].email] = "550 5.1.1 mailbox unavailable"
    await harness.publish_breach(BREACH)
    app = await harness.start_app()
    stub = harness.stub(app)
    items = [harness.item(patient, BREACH) for patient in PATIENTS]
    items.append(
        OutreachItem(
            patient_ref="PRIV-poison",
            breach_id=BREACH,
            idempotency_key="k-poison",
            sealed_contact=os.urandom(200),
        )
    )
    await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=20)
    settled = await harness.settled(BREACH, len(items))
    assert {key: entry.channel for key, entry in settled.items() if entry.channel} == {
        "k-PRIV-1-alles-2025": "email",
        "k-PRIV-2-alles-2025": "sms",
        "k-PRIV-3-alles-2025": "digital_post",
        "k-PRIV-4-alles-2025": "sms",
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
    # The search works: what is meant to be stored (status events) is found in the files.
    assert b"PRIV-1" in stored
    assert b"k-PRIV-3-alles-2025" in stored
    assert contact_data_in(stored, PATIENTS) == []
    assert contact_data_in(harness.nats.log_path.read_bytes(), PATIENTS) == []

    log_text = captured_logs.getvalue()
    assert "notice sent" in log_text
    assert "request dead-lettered" in log_text
    assert contact_data_in(log_text.encode("utf-8"), PATIENTS) == []
