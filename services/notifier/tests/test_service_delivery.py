"""From SubmitOutreach to the patient's inbox: real SMTP, SMS gateway, outbox, NATS.

Content per language and categories (the proven entry's), channel fallback,
poison requests injected into the queue past intake and undeliverable ones in
dead letters while the rest go on, transient failures retried until the
attempts are used up, retracted breaches skipped, WatchStatus resuming from a
sequence, and new-breach alerts to hospitals.
"""

from __future__ import annotations

import base64
import os
import tomllib
from dataclasses import replace
from datetime import date
from email.message import EmailMessage
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import nacl.public

from breachmatch import bus, keys
from breachmatch.v1.outreach_pb2 import (
    OutreachItem,
    OutreachStatus,
    SubmitOutreachRequest,
    WatchStatusRequest,
    WatchStatusResponse,
)
from breachmatch_dev.breach_events import DESCRIPTIONS
from breachmatch_notifier.channels import message_uuid
from breachmatch_notifier.channels.digital_post import MEMO_NAMESPACE
from breachmatch_notifier.dead_letters import REASON_HEADER
from breachmatch_notifier.ledger import DEAD, SENT, SKIPPED, LedgerEntry
from breachmatch_notifier.notice import (
    PACKAGED_TEMPLATES,
    BreachInfo,
    Notice,
    NoticeContext,
    Sender,
    render_notice,
)
from breachmatch_notifier.queue import publish_request

if TYPE_CHECKING:
    from breachmatch.v1.outreach_pb2_grpc import OutreachAsyncStub

from .conftest import (
    ALERT_EMAIL,
    CONTACT_POINT,
    HOSPITAL,
    ORGANISATION,
    Harness,
    Patient,
    opaque_ref,
    read_event,
    write_tenants,
)

BREACH = "alles-2025"
MEMO = {"memo": MEMO_NAMESPACE}
RPC_TIMEOUT = 20.0
EVENT_TIMEOUT = 20.0
PUBLISHED = BreachInfo(
    breach_id=BREACH,
    title="Alles Lægehus-lækket",
    organisation="Alles Lægehus ApS",
    breach_date=date(2025, 3, 14),
    added_date=date(2025, 3, 20),
    descriptions=DESCRIPTIONS,
)

DANISH = Patient(
    ref="P-da",
    name="Signe Østergaard",
    email="signe.oestergaard@example.dk",
    language="da",
    categories=("national_id", "medication"),
)
ENGLISH = Patient(
    ref="P-en",
    name="John Whitfield",
    email="John.Whitfield@example.co.uk",
    language="en-GB",
    categories=("contact", "medical_history"),
)
BY_SMS = Patient(
    ref="P-sms",
    name="Mette Kjær",
    phone="+45 20 30 40 50",
    language="en",
    channels=("sms",),
    categories=("contact",),
)
BY_POST = Patient(
    ref="P-post",
    name="Preben Dahl",
    cpr="010190-1234",
    postal_address="Testvej 1, 2100 København Ø",
    channels=("digital_post",),
)


def phrases(language: str) -> dict[str, dict[str, dict[str, str]]]:
    return tomllib.loads((PACKAGED_TEMPLATES / f"phrases.{language}.toml").read_text())


def expected_notice(patient: Patient) -> Notice:
    sender = Sender(ORGANISATION, CONTACT_POINT)
    context = NoticeContext.for_contact(PUBLISHED, sender, patient.contact(), patient.categories)
    return render_notice(context)


def body_of(message: EmailMessage, subtype: str) -> str:
    """The decoded text of one part, with SMTP's CRLF line ends made LF again."""
    part = message.get_body((subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


async def submit(stub: OutreachAsyncStub, items: list[OutreachItem]) -> list[bool]:
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT)
    return [receipt.accepted for receipt in response.receipts]


async def watch(stub: OutreachAsyncStub, count: int, after: int = 0) -> list[WatchStatusResponse]:
    """The first ``count`` status events after sequence ``after``."""
    events: list[WatchStatusResponse] = []
    stream = stub.WatchStatus(WatchStatusRequest(after_sequence=after), timeout=EVENT_TIMEOUT)
    async for event in stream:
        events.append(event)
        if len(events) == count:
            stream.cancel()
            break
    return events


def seal_bytes(harness: Harness, plain: bytes) -> bytes:
    """A box that opens with the notifier's key but holds ``plain``, not a ContactDetails."""
    public = keys.load_sealing_public_key(harness.operator.notifier_public_key)
    return bytes(nacl.public.SealedBox(public).encrypt(plain))


async def test_notices_are_in_the_patients_language_with_their_categories(
    harness: Harness,
) -> None:
    patients = [DANISH, ENGLISH, BY_SMS, BY_POST]
    await harness.publish_breach(BREACH, patients)
    app = await harness.start_app()
    assert (
        await submit(harness.stub(app), [harness.item(p, BREACH) for p in patients]) == [True] * 4
    )
    settled = await harness.settled(BREACH, 4)
    channels = {key: entry.channel for key, entry in settled.items()}
    assert channels == {
        f"k-{DANISH.ref}-{BREACH}": "email",
        f"k-{ENGLISH.ref}-{BREACH}": "email",
        f"k-{BY_SMS.ref}-{BREACH}": "sms",
        f"k-{BY_POST.ref}-{BREACH}": "digital_post",
    }

    for patient, language in ((DANISH, "da"), (ENGLISH, "en")):
        (message,) = harness.smtp.to(patient.email.lower())
        expected = expected_notice(patient)
        assert message["Content-Language"] == language
        assert message["Subject"].split() == expected.subject.split()
        text = body_of(message, "plain")
        html = body_of(message, "html")
        assert text.strip() == expected.text.strip()
        assert html.strip() == expected.html.strip()
        for value in (patient.name, PUBLISHED.title, CONTACT_POINT):
            assert value in text
        wording = phrases(language)["categories"]
        other = phrases("en" if language == "da" else "da")["categories"]
        for category in patient.categories:
            assert wording[category]["label"] in text
            assert other[category]["label"] not in text
        assert "http" not in text + html

    (sms,) = harness.sms.requests
    assert sms["to"] == "+4520304050"
    assert sms["text"] == expected_notice(BY_SMS).sms_text
    assert "Rigshospitalet" in sms["text"]

    letter = harness.outbox / f"{message_uuid(f'k-{BY_POST.ref}-{BREACH}')}.xml"
    assert letter.stat().st_mode & 0o777 == 0o600
    document = ElementTree.parse(letter)  # noqa: S314 (our own channel wrote it)
    content = document.find(".//memo:File/memo:content", MEMO)
    assert content is not None
    assert (
        base64.b64decode(content.text or "").decode() == expected_notice(BY_POST).digital_post_text
    )


async def inject(harness: Harness, item: OutreachItem) -> None:
    """Put ``item`` on the work queue the way intake would, but without intake's checks.

    What someone who could write to NATS directly could do: the worker must
    still refuse anything that does not open or proves no match.
    """
    ref = harness.ledger.patient_ref(HOSPITAL, item.patient_ref, item.breach_id)
    key = harness.ledger.outreach_key(HOSPITAL, item.breach_id, ref)
    entry = LedgerEntry.new(HOSPITAL, item.breach_id, ref, item.idempotency_key)
    assert await harness.ledger.create(key, entry) is not None
    await publish_request(harness.js, HOSPITAL, item, key, entry.round)


async def test_poison_requests_past_intake_go_to_dead_letters_while_the_rest_go_on(
    harness: Harness,
) -> None:
    await harness.publish_breach(BREACH, [DANISH, ENGLISH])
    app = await harness.start_app()
    good = [harness.item(p, BREACH) for p in (DANISH, ENGLISH)]
    intruder = Patient(ref="P-intruder", name="Ida Intruder", email="victim@example.dk")
    unproven = intruder.contact()
    unproven.ClearField("proof")
    poison = {
        "k-garbage": os.urandom(120),
        "k-not-contact": seal_bytes(harness, b"\xff\xff\xff\xff not a protobuf"),
        "k-no-proof": harness.seal(unproven),
        "k-false-proof": harness.seal(intruder.contact()),  # its token is in no entry
    }
    stub = harness.stub(app)
    assert await submit(stub, good[:1]) == [True]
    for number, (key, sealed) in enumerate(poison.items()):
        await inject(
            harness,
            OutreachItem(
                patient_ref=opaque_ref(f"P-poison-{number}"),
                breach_id=BREACH,
                idempotency_key=key,
                sealed_contact=sealed,
            ),
        )
    assert await submit(stub, good[1:]) == [True]
    settled = await harness.settled(BREACH, 6)
    assert {key: entry.state for key, entry in settled.items()} == {
        good[0].idempotency_key: SENT,
        good[1].idempotency_key: SENT,
        **dict.fromkeys(poison, DEAD),
    }
    assert sorted(harness.smtp.by_key()) == sorted(item.idempotency_key for item in good)
    assert harness.smtp.to(intruder.email) == []

    dead = await harness.js.subscribe(
        bus.subject_for(bus.OUTREACH_DEAD, HOSPITAL), ordered_consumer=True
    )
    letters = [await dead.next_msg(timeout=EVENT_TIMEOUT) for _ in range(len(poison))]
    await dead.unsubscribe()
    by_key = {OutreachStatus.FromString(m.data).idempotency_key: m for m in letters}
    assert set(by_key) == set(poison)
    reasons = {key: (m.headers or {})[REASON_HEADER] for key, m in by_key.items()}
    assert reasons == {
        "k-garbage": "unopenable_contact",
        "k-not-contact": "unopenable_contact",
        "k-no-proof": "unproven_match",
        "k-false-proof": "unproven_match",
    }
    details = {key: OutreachStatus.FromString(m.data).detail for key, m in by_key.items()}
    assert "does not open" in details["k-garbage"]
    assert "not a ContactDetails" in details["k-not-contact"]
    assert "proof: missing" in details["k-no-proof"]
    assert "matches no entry" in details["k-false-proof"]
    for letter in letters:
        status = OutreachStatus.FromString(letter.data)
        assert status.state == OutreachStatus.STATE_DEAD
        assert status.tenant == HOSPITAL
    # Terminated and acknowledged requests are gone from the work queue.
    assert (await harness.js.stream_info(bus.STREAM_OUTREACH)).state.messages == 0


async def test_dead_request_can_be_submitted_again(harness: Harness) -> None:
    await harness.publish_breach(BREACH, [DANISH])
    harness.smtp.replies["old.address@example.dk"] = "550 5.1.1 mailbox unavailable"
    app = await harness.start_app()
    stub = harness.stub(app)
    outdated = replace(DANISH, email="old.address@example.dk")
    first = harness.item(DANISH, BREACH, contact=outdated.contact())
    assert await submit(stub, [first]) == [True]
    (entry,) = (await harness.settled(BREACH, 1)).values()
    assert (entry.state, entry.round) == (DEAD, 1)

    fixed = harness.item(DANISH, BREACH, "another-key")
    assert await submit(stub, [fixed]) == [True]
    watcher = await watch(stub, 5)  # queued, failed (email), dead, queued, sent
    assert [event.status.state for event in watcher] == [
        OutreachStatus.STATE_QUEUED,
        OutreachStatus.STATE_FAILED,
        OutreachStatus.STATE_DEAD,
        OutreachStatus.STATE_QUEUED,
        OutreachStatus.STATE_SENT,
    ]
    # The new round keeps the entry's first idempotency key: message ids stay stable.
    assert {event.status.idempotency_key for event in watcher} == {first.idempotency_key}
    (message,) = harness.smtp.messages
    assert message["To"] == DANISH.email
    assert await submit(stub, [fixed]) == [False]


async def test_refused_channels_fall_back_and_a_contact_nobody_takes_is_dead(
    harness: Harness,
) -> None:
    harness.smtp.replies["refused@example.dk"] = "550 5.1.1 mailbox unavailable"
    harness.smtp.replies["gone@example.dk"] = "550 5.1.1 mailbox unavailable"
    falls_back = Patient(
        ref="P-fb", name="Anna Fallback", email="refused@example.dk", phone="20304050"
    )
    nowhere = Patient(ref="P-nw", name="Bo Nowhere", email="gone@example.dk")
    await harness.publish_breach(BREACH, [falls_back, nowhere])
    app = await harness.start_app()
    stub = harness.stub(app)
    items = [harness.item(falls_back, BREACH), harness.item(nowhere, BREACH)]
    assert await submit(stub, items) == [True, True]
    settled = await harness.settled(BREACH, 2)
    assert settled["k-P-fb-alles-2025"].state == SENT
    assert settled["k-P-fb-alles-2025"].channel == "sms"
    assert settled["k-P-nw-alles-2025"].state == DEAD
    assert "email" in settled["k-P-nw-alles-2025"].detail

    events = await watch(stub, 6)  # 2 queued, per item: failed(email) and sent/dead
    seen = {(e.status.idempotency_key, e.status.state, e.status.channel) for e in events}
    assert ("k-P-fb-alles-2025", OutreachStatus.STATE_FAILED, "email") in seen
    assert ("k-P-fb-alles-2025", OutreachStatus.STATE_SENT, "sms") in seen
    assert ("k-P-nw-alles-2025", OutreachStatus.STATE_FAILED, "email") in seen
    assert ("k-P-nw-alles-2025", OutreachStatus.STATE_DEAD, "") in seen
    assert harness.smtp.messages == []
    assert [request["to"] for request in harness.sms.requests] == ["+4520304050"]


async def test_transient_failures_are_retried_then_dead_lettered(harness: Harness) -> None:
    harness.smtp.replies["busy@example.dk"] = "451 4.3.0 try again later"
    busy = Patient(ref="P-busy", name="Carl Busy", email="busy@example.dk")
    await harness.publish_breach(BREACH, [busy, DANISH])
    app = await harness.start_app(max_deliver=2, backoff=(0.1,))
    assert await submit(
        harness.stub(app), [harness.item(busy, BREACH), harness.item(DANISH, BREACH)]
    ) == [True, True]
    settled = await harness.settled(BREACH, 2)
    stuck = settled["k-P-busy-alles-2025"]
    assert (stuck.state, stuck.attempts) == (DEAD, 2)
    assert stuck.detail.startswith("gave up after 2 attempts: email: recipient refused (451)")
    assert settled[f"k-{DANISH.ref}-{BREACH}"].state == SENT
    assert [message["To"] for message in harness.smtp.messages] == [DANISH.email]


async def test_a_retracted_breach_is_skipped(harness: Harness) -> None:
    await harness.publish_breach(BREACH, [DANISH])
    intake = await harness.start_app(workers_per_process=0)
    assert await submit(harness.stub(intake), [harness.item(DANISH, BREACH)]) == [True]
    await harness.retract_breach(BREACH)
    await harness.start_app(intake=False)
    (entry,) = (await harness.settled(BREACH, 1)).values()
    assert (entry.state, entry.detail) == (SKIPPED, "breach retracted")
    assert harness.smtp.messages == []


async def test_watch_status_resumes_after_a_sequence(harness: Harness) -> None:
    await harness.publish_breach(BREACH, [DANISH, ENGLISH, BY_SMS])
    # Another tenant's event on the same stream: never shown to this one.
    other = OutreachStatus(tenant="hospital-b", idempotency_key="theirs")
    await harness.js.publish(
        bus.subject_for(bus.OUTREACH_STATUS, "hospital-b"),
        other.SerializeToString(),
        stream=bus.STREAM_OUTREACH_STATUS,
    )
    app = await harness.start_app()
    stub = harness.stub(app)
    assert await submit(stub, [harness.item(p, BREACH) for p in (DANISH, ENGLISH)]) == [True] * 2
    await harness.settled(BREACH, 2)

    everything = await watch(stub, 4)
    assert {event.status.tenant for event in everything} == {HOSPITAL}
    assert sorted(OutreachStatus.State.Name(e.status.state) for e in everything) == [
        "STATE_QUEUED",
        "STATE_QUEUED",
        "STATE_SENT",
        "STATE_SENT",
    ]
    assert [e.sequence for e in everything] == sorted(e.sequence for e in everything)
    resumed = await watch(stub, 2, after=everything[1].sequence)
    assert resumed == everything[2:]

    # A watcher that resumed at the end sees what happens next, live.
    later = stub.WatchStatus(
        WatchStatusRequest(after_sequence=everything[-1].sequence), timeout=EVENT_TIMEOUT
    )
    assert await submit(stub, [harness.item(BY_SMS, BREACH)]) == [True]
    live = [await read_event(later), await read_event(later)]
    later.cancel()
    assert [e.status.idempotency_key for e in live] == [f"k-{BY_SMS.ref}-{BREACH}"] * 2
    assert [e.status.state for e in live] == [
        OutreachStatus.STATE_QUEUED,
        OutreachStatus.STATE_SENT,
    ]
    assert all(e.status.patient_ref == BY_SMS.opaque_ref for e in live)


async def test_each_hospital_is_alerted_once_per_new_breach(harness: Harness) -> None:
    write_tenants(harness.tenants_file, alert_email=ALERT_EMAIL)
    await harness.start_app()
    await harness.publish_breach("first-2025", title="Første læk")
    await harness.smtp.wait_until(lambda sink: len(sink.messages) == 1)
    # Published again (a new body), then a second breach: alerts are handled in order,
    # so once the second breach's alert is here the republication was handled too.
    await harness.publish_breach("first-2025", [DANISH], title="Første læk", version=2)
    await harness.publish_breach("second-2025", title="Andet læk")
    await harness.smtp.wait_until(lambda sink: len(sink.messages) >= 2)

    subjects = [message["Subject"] for message in harness.smtp.to(ALERT_EMAIL)]
    assert len(subjects) == 2
    assert "Første læk" in subjects[0]
    assert "Andet læk" in subjects[1]
    assert all(subject.startswith("Nyt databrud klar til kontrol") for subject in subjects)
    body = body_of(harness.smtp.messages[0], "plain")
    assert "first-2025" in body
    assert "ingen patientoplysninger" in body
    assert "http" not in body
