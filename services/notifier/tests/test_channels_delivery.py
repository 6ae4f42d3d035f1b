"""Channels against real servers: SMTP (aiosmtpd), an HTTP SMS gateway (aiohttp),
a Digital Post outbox on disk, and the dispatcher's fallback between them."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.policy
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller

from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels import (
    ChannelsConfig,
    DeliveryError,
    DeliveryOutcomeUnknownError,
    DigitalPostChannel,
    DigitalPostConfig,
    Dispatcher,
    DryRunLog,
    EmailChannel,
    PermanentDeliveryError,
    SmsChannel,
    SmsGatewayConfig,
    SmtpConfig,
    StartTls,
    TransientDeliveryError,
    UndeliverableError,
    message_uuid,
)
from breachmatch_notifier.channels.digital_post import MEMO_NAMESPACE, write_atomically
from breachmatch_notifier.channels.email import IDEMPOTENCY_HEADER
from breachmatch_notifier.claims import ClaimLostError
from breachmatch_notifier.notice import BreachInfo, Notice, NoticeContext, Sender, render_notice

from .conftest import RecordingIntent

KEY = "tenant-a:patient-17:alles-2025"
MAILBOX = "ole.oelgaard@example.dk"
REFUSED_MAILBOX = "nobody@example.dk"  # the SMTP server answers 550
BUSY_MAILBOX = "busy@example.dk"  # the SMTP server answers 451
SCANNED_MAILBOX = "scanned@example.dk"  # the SMTP server refuses the message itself (554)
VANISHING_MAILBOX = "vanishing@example.dk"  # the server takes it, then hangs up unanswered
PHONE = "+45 20 30 40 50"
PHONE_E164 = "+4520304050"
CPR = "010190-1234"
MEMO = {"memo": MEMO_NAMESPACE}


def notice_for(language: str, categories: tuple[str, ...] = ("contact", "national_id")) -> Notice:
    return render_notice(
        NoticeContext(
            breach=BreachInfo(
                "alles-2025", "Alles Lægehus-lækket", "Alles Lægehus", None, date(2025, 3, 20)
            ),
            sender=Sender("Rigshospitalet", "Patientkontoret, tlf. 35 45 35 45"),
            categories=categories,
            recipient_name="Ole Ølgaard",
            language=language,
        )
    )


def contact(**fields: Any) -> ContactDetails:
    return ContactDetails(name="Ole Ølgaard", language="da", **fields)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def assert_no_contact_data(text: str) -> None:
    for value in (MAILBOX, REFUSED_MAILBOX, BUSY_MAILBOX, PHONE, PHONE_E164, CPR, "0101901234"):
        assert value not in text


# --- servers ------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: accepts mail, refuses one mailbox for good and one for now,
    refuses the message for another, and for a last one takes the message and hangs up
    without an answer — the one case where the sender cannot know it went out."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[list[str]] = []
        self.sessions: set[int] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == REFUSED_MAILBOX:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if address == BUSY_MAILBOX:
            return f"451 4.3.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        if envelope.rcpt_tos == [SCANNED_MAILBOX]:
            return "554 5.6.0 message content refused"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append(list(envelope.rcpt_tos))
        if envelope.rcpt_tos == [VANISHING_MAILBOX]:
            server.transport.close()
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, SmtpConfig]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield (
            inbox,
            SmtpConfig(
                host="127.0.0.1",
                port=controller.port,
                from_address="noreply@rigshospitalet.example.dk",
                starttls=StartTls.OFF,
                timeout_seconds=5,
            ),
        )
    finally:
        controller.stop()


class Gateway:
    """An SMS gateway on localhost that answers with ``status`` and records requests."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.release = asyncio.Event()

    async def send(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        return web.json_response({"id": "gw-1"}, status=self.status)

    async def hang(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.json_response({})


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, str]]:
    state = Gateway()
    app = web.Application()
    app.router.add_post("/sms", state.send)
    app.router.add_post("/hang", state.hang)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield state, str(server.make_url("/"))
    finally:
        state.release.set()
        await server.close()


@pytest.fixture
async def sms_channel(gateway: tuple[Gateway, str]) -> AsyncIterator[SmsChannel]:
    _, base = gateway
    channel = SmsChannel(
        SmsGatewayConfig(
            url=base + "sms",
            token="s3cret",
            to_key="recipient",
            text_key="message",
            extra_fields={"sender": "Rigshosp"},
            timeout_seconds=5,
        )
    )
    yield channel
    await channel.aclose()


# --- e-mail -------------------------------------------------------------------


async def test_email_is_multipart_in_the_patients_language(smtp) -> None:
    inbox, config = smtp
    notice = notice_for("da", ("national_id", "medication"))
    result = await EmailChannel(config).send(notice, contact(email=MAILBOX), KEY, RecordingIntent())

    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert inbox.envelopes[0] == [MAILBOX]
    # The stdlib folds long encoded subjects with a doubled space; words are what count.
    assert message["Subject"].split() == notice.subject.split()
    assert message["From"].addresses[0].display_name == "Rigshospitalet"
    assert message["Content-Language"] == "da"
    assert message[IDEMPOTENCY_HEADER] == KEY
    assert message["Message-ID"] == result.reference
    assert str(message_uuid(KEY)) in result.reference
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    plain, markup = text.get_content(), html.get_content()
    assert "CPR-nummer" in plain
    assert "oplysninger om medicin" in plain
    assert "oplysninger om medicin" in markup
    assert "<ul>" in markup
    for part in (plain, markup):
        assert "http" not in part
        assert "www." not in part


async def test_the_intent_is_recorded_after_the_recipient_and_before_data(smtp) -> None:
    inbox, config = smtp
    intent = RecordingIntent()
    result = await EmailChannel(config).send(notice_for("da"), contact(email=MAILBOX), KEY, intent)
    assert intent.events == [("commit", "email", result.reference)]
    assert [message["Message-ID"] for message in inbox.messages] == [result.reference]

    refused = RecordingIntent()
    with pytest.raises(PermanentDeliveryError):
        await EmailChannel(config).send(
            notice_for("da"), contact(email=REFUSED_MAILBOX), KEY, refused
        )
    assert refused.events == []  # nothing to record: the recipient was refused before DATA


async def test_no_data_is_sent_when_the_intent_cannot_be_recorded(smtp) -> None:
    inbox, config = smtp
    taken_over = RecordingIntent(refuse=ClaimLostError(None))
    with pytest.raises(ClaimLostError):
        await EmailChannel(config).send(notice_for("da"), contact(email=MAILBOX), KEY, taken_over)
    assert inbox.messages == []


async def test_a_session_cut_off_after_data_is_an_unknown_outcome(smtp) -> None:
    inbox, config = smtp
    intent = RecordingIntent()
    with pytest.raises(DeliveryOutcomeUnknownError) as caught:
        await EmailChannel(config).send(
            notice_for("da"), contact(email=VANISHING_MAILBOX), KEY, intent
        )
    assert VANISHING_MAILBOX not in str(caught.value)
    # The server did take it: exactly why it must not be sent again blindly.
    assert len(inbox.messages) == 1
    assert intent.events == [("commit", "email", inbox.messages[0]["Message-ID"])]


async def test_sessions_are_kept_between_notices(smtp) -> None:
    inbox, config = smtp
    channel = EmailChannel(config)
    try:
        for number in range(3):
            await channel.send(
                notice_for("da"), contact(email=MAILBOX), f"{KEY}-{number}", RecordingIntent()
            )
    finally:
        await channel.aclose()
    assert len(inbox.messages) == 3
    assert len(inbox.sessions) == 1


async def test_concurrent_sends_share_at_most_the_configured_sessions(smtp) -> None:
    inbox, config = smtp
    channel = EmailChannel(dataclasses.replace(config, sessions=2))
    keys = [f"{KEY}-{number}" for number in range(8)]
    try:
        await asyncio.gather(
            *(
                channel.send(notice_for("da"), contact(email=MAILBOX), key, RecordingIntent())
                for key in keys
            )
        )
    finally:
        await channel.aclose()
    assert sorted(m[IDEMPOTENCY_HEADER] for m in inbox.messages) == sorted(keys)
    assert len(inbox.sessions) == 2  # eight at once, over the two sessions allowed


async def test_an_address_beyond_ascii_goes_over_smtputf8(smtp) -> None:
    inbox, config = smtp
    await EmailChannel(config).send(
        notice_for("da"), contact(email="Søren@Example.DK"), KEY, RecordingIntent()
    )
    [message] = inbox.messages
    assert message["To"] == "søren@example.dk"  # raw UTF-8, not an encoded word
    assert inbox.envelopes == [["søren@example.dk"]]


async def test_english_email_names_english_categories(smtp) -> None:
    inbox, config = smtp
    await EmailChannel(config).send(
        notice_for("en", ("referrals",)), contact(email=MAILBOX), KEY, RecordingIntent()
    )
    body = inbox.messages[0].get_body(("plain",))
    assert body is not None
    assert "referrals" in body.get_content()
    assert "henvisninger" not in body.get_content()


async def test_a_retry_carries_the_same_message_id(smtp) -> None:
    inbox, config = smtp
    channel = EmailChannel(config)
    first = await channel.send(notice_for("da"), contact(email=MAILBOX), KEY, RecordingIntent())
    second = await channel.send(notice_for("da"), contact(email=MAILBOX), KEY, RecordingIntent())
    other = await channel.send(
        notice_for("da"), contact(email=MAILBOX), KEY + "-other", RecordingIntent()
    )
    assert first.reference == second.reference != other.reference
    assert [m["Message-ID"] for m in inbox.messages] == [
        first.reference,
        first.reference,
        other.reference,
    ]


@pytest.mark.parametrize(
    ("address", "error"),
    [
        (REFUSED_MAILBOX, PermanentDeliveryError),
        (BUSY_MAILBOX, TransientDeliveryError),
        ("not an address", PermanentDeliveryError),
        ("noreply@example.dk", PermanentDeliveryError),  # a placeholder, not a person
    ],
)
async def test_email_failures_are_classified_without_the_address(smtp, address, error) -> None:
    inbox, config = smtp
    with pytest.raises(error) as caught:
        await EmailChannel(config).send(
            notice_for("da"), contact(email=address), KEY, RecordingIntent()
        )
    assert address not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert inbox.messages == []


async def test_unreachable_smtp_server_is_transient() -> None:
    config = SmtpConfig(host="127.0.0.1", port=free_port(), from_address="a@example.dk")
    with pytest.raises(TransientDeliveryError):
        await EmailChannel(config).send(
            notice_for("da"), contact(email=MAILBOX), KEY, RecordingIntent()
        )


async def test_required_starttls_refuses_a_plaintext_server(smtp) -> None:
    inbox, config = smtp
    strict = SmtpConfig(
        host=config.host,
        port=config.port,
        from_address=config.from_address,
        starttls=StartTls.REQUIRED,
        timeout_seconds=5,
    )
    with pytest.raises(TransientDeliveryError):
        await EmailChannel(strict).send(
            notice_for("da"), contact(email=MAILBOX), KEY, RecordingIntent()
        )
    assert inbox.messages == []


# --- SMS ----------------------------------------------------------------------


async def test_sms_posts_the_configured_json(gateway, sms_channel) -> None:
    state, _ = gateway
    notice = notice_for("da")
    result = await sms_channel.send(notice, contact(phone=PHONE), KEY, RecordingIntent())
    assert result.channel == "sms"
    [(headers, body)] = state.requests
    assert body == {
        "sender": "Rigshosp",
        "recipient": PHONE_E164,
        "message": notice.sms_text,
        "reference": KEY,
    }
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Idempotency-Key"] == KEY


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentDeliveryError),
        (404, PermanentDeliveryError),
        (422, PermanentDeliveryError),
        (429, TransientDeliveryError),
        (500, TransientDeliveryError),
        (503, TransientDeliveryError),
    ],
)
async def test_gateway_status_decides_permanent_or_transient(
    gateway, sms_channel, status, error
) -> None:
    state, _ = gateway
    state.status = status
    with pytest.raises(error, match=str(status)) as caught:
        await sms_channel.send(notice_for("da"), contact(phone=PHONE), KEY, RecordingIntent())
    assert_no_contact_data(str(caught.value))


@pytest.mark.parametrize(
    ("deduplicates", "error"),
    [(True, TransientDeliveryError), (False, DeliveryOutcomeUnknownError)],
)
async def test_a_gateway_that_never_answers(gateway, deduplicates, error) -> None:
    """The request left: a deduplicating gateway is simply asked again later; any
    other may have sent the SMS, so the outcome is unknown and the intent stands."""
    state, base = gateway
    config = SmsGatewayConfig(url=base + "hang", timeout_seconds=0.3, deduplicates=deduplicates)
    channel = SmsChannel(config)
    intent = RecordingIntent()
    try:
        with pytest.raises(error, match="cut off"):
            await channel.send(notice_for("da"), contact(phone=PHONE), KEY, intent)
    finally:
        await channel.aclose()
    assert len(state.requests) == 0
    assert intent.events == ([] if deduplicates else [("commit", "sms", str(message_uuid(KEY)))])


async def test_refused_connection_is_transient() -> None:
    channel = SmsChannel(SmsGatewayConfig(url=f"http://127.0.0.1:{free_port()}/sms"))
    try:
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            await channel.send(notice_for("da"), contact(phone=PHONE), KEY, RecordingIntent())
    finally:
        await channel.aclose()


async def test_unusable_phone_is_permanent_and_not_sent(gateway, sms_channel) -> None:
    state, _ = gateway
    with pytest.raises(PermanentDeliveryError) as caught:
        await sms_channel.send(
            notice_for("da"), contact(phone="12 34 XX XX"), KEY, RecordingIntent()
        )
    assert "12 34" not in str(caught.value)
    assert state.requests == []


# --- Digital Post -------------------------------------------------------------


def read_memo(path: Path) -> ElementTree.Element:
    return ElementTree.fromstring(path.read_bytes())  # noqa: S314 - a file this test wrote


def names_in(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


async def test_digital_post_writes_a_memo_message(tmp_path: Path) -> None:
    channel = DigitalPostChannel(DigitalPostConfig(outbox=tmp_path, sender_id="12345678"))
    notice = notice_for("da", ("diagnoses",))
    result = await channel.send(notice, contact(cpr=CPR), KEY, RecordingIntent())

    uuid = str(message_uuid(KEY))
    path = tmp_path / f"{uuid}.xml"
    assert result.reference == path.name
    assert names_in(tmp_path) == [path.name]  # no temp file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    memo = read_memo(path)
    header = memo.find("memo:MessageHeader", MEMO)
    assert header is not None
    assert header.findtext("memo:messageUUID", namespaces=MEMO) == uuid
    assert header.findtext("memo:label", namespaces=MEMO) == notice.subject
    assert header.findtext("memo:Sender/memo:senderID", namespaces=MEMO) == "12345678"
    assert header.findtext("memo:Sender/memo:label", namespaces=MEMO) == "Rigshospitalet"
    assert header.findtext("memo:Recipient/memo:recipientID", namespaces=MEMO) == "0101901234"
    assert header.findtext("memo:Recipient/memo:idType", namespaces=MEMO) == "CPR"
    content = memo.findtext("memo:MessageBody/memo:MainDocument/memo:File/memo:content", "", MEMO)
    text = base64.b64decode(content).decode("utf-8")
    assert text == notice.digital_post_text
    assert "diagnoser" in text


async def test_digital_post_retry_overwrites_instead_of_duplicating(tmp_path: Path) -> None:
    channel = DigitalPostChannel(DigitalPostConfig(outbox=tmp_path))
    await channel.send(notice_for("da"), contact(cpr=CPR), KEY, RecordingIntent())
    english = notice_for("en")
    await channel.send(english, contact(cpr=CPR), KEY, RecordingIntent())
    [name] = names_in(tmp_path)
    path = tmp_path / name
    label = read_memo(path).findtext("memo:MessageHeader/memo:label", namespaces=MEMO)
    assert label == english.subject
    await channel.send(english, contact(cpr=CPR), KEY + "-other", RecordingIntent())
    assert len(names_in(tmp_path)) == 2


async def test_digital_post_refuses_a_bad_cpr_and_a_missing_outbox(tmp_path: Path) -> None:
    channel = DigitalPostChannel(DigitalPostConfig(outbox=tmp_path))
    with pytest.raises(PermanentDeliveryError) as caught:
        await channel.send(notice_for("da"), contact(cpr="320190-1234"), KEY, RecordingIntent())
    assert "320190" not in str(caught.value)
    assert names_in(tmp_path) == []
    gone = DigitalPostChannel(DigitalPostConfig(outbox=tmp_path / "not-mounted"))
    with pytest.raises(TransientDeliveryError, match="outbox"):
        await gone.send(notice_for("da"), contact(cpr=CPR), KEY, RecordingIntent())


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "letter.xml"
    write_atomically(path, b"<old/>")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"<old/>"
    assert names_in(tmp_path) == ["letter.xml"]


# --- the dispatcher: routing with fallback over real channels ------------------


@pytest.fixture
async def dispatcher(smtp, sms_channel, tmp_path: Path) -> AsyncIterator[Dispatcher]:
    _, config = smtp
    channels = {
        "email": EmailChannel(config),
        "sms": sms_channel,
        "digital_post": DigitalPostChannel(DigitalPostConfig(outbox=tmp_path)),
    }
    dispatcher = Dispatcher(channels)
    yield dispatcher
    await dispatcher.aclose()


async def test_no_email_address_falls_back_to_sms(smtp, gateway, dispatcher) -> None:
    inbox, _ = smtp
    state, _ = gateway
    result = await dispatcher.deliver(
        notice_for("da"), contact(phone=PHONE), KEY, RecordingIntent()
    )
    assert result.channel == "sms"
    assert result.failed_channels == ()
    assert inbox.messages == []
    assert len(state.requests) == 1


async def test_refused_email_falls_back_to_sms(gateway, dispatcher) -> None:
    state, _ = gateway
    result = await dispatcher.deliver(
        notice_for("da"), contact(email=REFUSED_MAILBOX, phone=PHONE), KEY, RecordingIntent()
    )
    assert result.channel == "sms"
    assert result.failed_channels == ("email",)
    assert len(state.requests) == 1


async def test_the_contacts_own_order_wins(smtp, gateway, dispatcher) -> None:
    inbox, _ = smtp
    state, _ = gateway
    chosen = contact(email=MAILBOX, phone=PHONE, channels=["sms", "email"])
    result = await dispatcher.deliver(notice_for("da"), chosen, KEY, RecordingIntent())
    assert result.channel == "sms"
    assert len(state.requests) == 1
    assert inbox.messages == []


async def test_a_refused_message_withdraws_the_intent_and_falls_back(gateway, dispatcher) -> None:
    state, _ = gateway
    intent = RecordingIntent()
    result = await dispatcher.deliver(
        notice_for("da"), contact(email=SCANNED_MAILBOX, phone=PHONE), KEY, intent
    )
    assert result.channel == "sms"
    assert len(state.requests) == 1
    uuid = str(message_uuid(KEY))
    assert intent.events == [
        ("commit", "email", f"<{uuid}@rigshospitalet.example.dk>"),
        ("withdraw",),
        ("commit", "sms", uuid),
    ]


async def test_transient_failure_stops_and_is_raised(smtp, gateway, dispatcher) -> None:
    state, _ = gateway
    with pytest.raises(TransientDeliveryError):
        await dispatcher.deliver(
            notice_for("da"), contact(email=BUSY_MAILBOX, phone=PHONE), KEY, RecordingIntent()
        )
    assert state.requests == []  # retried later as a whole, not handed on


async def test_every_channel_refusing_is_undeliverable(smtp, gateway, dispatcher, tmp_path) -> None:
    state, _ = gateway
    state.status = 400
    who = contact(email=REFUSED_MAILBOX, phone=PHONE, cpr="320190-1234")
    with pytest.raises(UndeliverableError) as caught:
        await dispatcher.deliver(notice_for("da"), who, KEY, RecordingIntent())
    assert [f.channel for f in caught.value.failures] == ["email", "sms", "digital_post"]
    assert isinstance(caught.value, PermanentDeliveryError)
    assert_no_contact_data(str(caught.value))
    assert names_in(tmp_path) == []


async def test_no_usable_field_is_undeliverable(dispatcher) -> None:
    with pytest.raises(UndeliverableError, match="no configured channel"):
        await dispatcher.deliver(notice_for("da"), contact(), KEY, RecordingIntent())


async def test_dispatch_logs_carry_no_contact_data(smtp, gateway, dispatcher) -> None:
    with structlog.testing.capture_logs() as logs:
        await dispatcher.deliver(
            notice_for("da"), contact(email=REFUSED_MAILBOX, phone=PHONE), KEY, RecordingIntent()
        )
    assert [entry["event"] for entry in logs] == ["channel failed permanently", "notice delivered"]
    assert_no_contact_data(repr(logs))


async def test_dry_run_counts_per_channel_and_keeps_nothing_else() -> None:
    log = DryRunLog()
    dispatcher = Dispatcher.from_config(ChannelsConfig(dry_run=True), dry_run_log=log)
    notice = notice_for("da")
    await dispatcher.deliver(notice, contact(email=MAILBOX), "k1", RecordingIntent())
    await dispatcher.deliver(notice, contact(phone=PHONE), "k2", RecordingIntent())
    await dispatcher.deliver(
        notice, contact(phone=PHONE, cpr=CPR, channels=["digital_post"]), "k3", RecordingIntent()
    )
    await dispatcher.deliver(notice, contact(channels=["dry_run"]), "k4", RecordingIntent())
    with pytest.raises(UndeliverableError):
        await dispatcher.deliver(notice, contact(), "k5", RecordingIntent())
    assert log.counts() == {"email": 1, "sms": 1, "digital_post": 1, "dry_run": 1}
    assert_no_contact_data(repr(vars(log)))


def test_delivery_errors_keep_channel_and_reason_apart() -> None:
    error = PermanentDeliveryError("sms", "gateway refused the message (400)")
    assert isinstance(error, DeliveryError)
    assert (error.channel, error.reason) == ("sms", "gateway refused the message (400)")
    assert str(error) == "sms: gateway refused the message (400)"
