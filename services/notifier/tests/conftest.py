"""Fixtures for the notifier service tests: real NATS, mTLS, SMTP and SMS gateway.

Every service test gets its own nats-server (`fresh_nats_server`, ~0.1 s to
start): the notifier's durable consumers are global to a server, and a
notifier left from another test must not pick up this test's requests. The
SMTP server (aiosmtpd) and the SMS gateway (aiohttp) run in the test's event
loop, so a test can hold a send in flight with an `asyncio.Event` and watch
deliveries arrive through conditions — never by sleeping.

The notifier joins NATS with its own service certificate (``services/
notifier`` of `notifier_pki`, issued by the session CA the servers trust), as
in production; the harness's own connection (`Harness.js`) is the dev-only
admin, which seeds breach events as ingest would and inspects the ledger.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import hashlib
import hmac
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
import nacl.public
import nacl.signing
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.smtp import SMTP
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from breachmatch import bus, keys
from breachmatch.filter import FilterWriter, Manifest, proof_object_name
from breachmatch.records import Category
from breachmatch.tls import TlsFiles, channel_credentials
from breachmatch.v1 import breach_pb2, outreach_pb2_grpc
from breachmatch.v1.outreach_pb2 import (
    ContactDetails,
    MatchProof,
    OutreachItem,
    SubmitOutreachRequest,
    WatchStatusResponse,
)
from breachmatch_dev import DevPki, NatsServer, make_dev_pki
from breachmatch_dev.breach_events import (
    DESCRIPTIONS,
    publication,
    publish_event,
    retraction,
)
from breachmatch_notifier.app import NotifierApp
from breachmatch_notifier.channels import (
    ChannelsConfig,
    DigitalPostConfig,
    SmsGatewayConfig,
    SmtpConfig,
    StartTls,
)
from breachmatch_notifier.channels.email import IDEMPOTENCY_HEADER
from breachmatch_notifier.config import NotifierConfig
from breachmatch_notifier.ledger import Ledger, LedgerEntry, ref_key_for

if TYPE_CHECKING:
    from breachmatch.v1.outreach_pb2_grpc import OutreachAsyncStub

HOSPITAL = "hospital-a"  # full sender identity, Danish
NO_IDENTITY = "hospital-b"  # in the tenants file, but without organisation and contact point
UNKNOWN = "hospital-c"  # holds a valid certificate, not in the tenants file
ORGANISATION = "Rigshospitalet"
CONTACT_POINT = "Patientkontoret, tlf. 35 45 35 45, hverdage 9-15"
ALERT_EMAIL = "dpo@rigshospitalet.example.dk"
SETTLE_TIMEOUT = 30.0
EVENT_TIMEOUT = 20.0
#: The worker's summary line, counting outcomes since the last (``sent_email=3``, ...).
SETTLED_LINE = "messages settled"


#: The hospital's key for opaque patient refs (the SDK derives its own from the cache key).
REF_KEY = bytes(range(32))


def opaque_ref(ref: str) -> str:
    """What the hospital sends in place of a patient ref."""
    return hmac.new(REF_KEY, ref.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Patient:
    """A test patient; every contact value is something no store or log may hold."""

    ref: str
    name: str
    email: str = ""
    phone: str = ""
    cpr: str = ""
    postal_address: str = ""
    language: str = "da"
    channels: tuple[str, ...] = ()
    #: The label of the patient's entry in the breach: what the notice must list.
    categories: tuple[str, ...] = ("contact", "national_id")
    #: The kind of match key the proof is for.
    kind: str = "cpr"

    @property
    def opaque_ref(self) -> str:
        return opaque_ref(self.ref)

    @property
    def token(self) -> bytes:
        """Stands in for the OPRF output of the patient's key: the notifier only looks it up."""
        return hashlib.sha512(b"breachmatch test token\x00" + self.ref.encode()).digest()

    def proof(self) -> MatchProof:
        return MatchProof(key_kind=self.kind, token=self.token)

    def contact(self) -> ContactDetails:
        return ContactDetails(
            name=self.name,
            email=self.email,
            phone=self.phone,
            cpr=self.cpr,
            postal_address=self.postal_address,
            language=self.language,
            channels=list(self.channels),
            proof=self.proof(),
        )

    def secrets(self) -> list[str]:
        """Every form of this patient's contact data a leak could take."""
        forms = [self.name, self.name.lower(), self.name.upper(), self.postal_address]
        forms += [self.email, self.email.lower()]
        if self.phone:
            digits = "".join(ch for ch in self.phone if ch.isdigit())
            forms += [self.phone, "+" + digits, digits, digits[-8:]]
        if self.cpr:
            forms += [self.cpr, self.cpr.replace("-", "")]
        return [form for form in forms if form]


class SmtpSink:
    """aiosmtpd handler keeping every message; can refuse or hold recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        #: wall-clock time each message was taken (after its DATA), in order
        self.arrivals: list[float] = []
        #: address -> SMTP reply, e.g. "550 5.1.1 no such mailbox"
        self.replies: dict[str, str] = {}
        #: address -> SMTP reply given to its first RCPT only (a passing refusal)
        self.replies_once: dict[str, str] = {}
        #: how many times each address was given in RCPT
        self.rcpt_counts: collections.Counter[str] = collections.Counter()
        self.rcpt_seen = 0
        self._hold_after: int | None = None
        self._hold_answers = False
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()
        self.port = 0

    def hold_after(self, passing: int) -> None:
        """Let ``passing`` recipients through, then hold the rest until `release` is set."""
        self._hold_after = passing

    def hold_answers(self) -> None:
        """Keep each message, but hold the answer to its DATA until `release` is set."""
        self._hold_answers = True

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, _: Any
    ) -> str:
        async with self._changed:
            self.rcpt_seen += 1
            self.rcpt_counts[address] += 1
            number = self.rcpt_seen
            self._changed.notify_all()
        if address in self.replies:
            return self.replies[address]
        if address in self.replies_once:
            return self.replies_once.pop(address)
        if self._hold_after is not None and number > self._hold_after:
            await self.release.wait()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        async with self._changed:
            self.messages.append(message)
            self.arrivals.append(time.time())
            self._changed.notify_all()
        if self._hold_answers:
            await self.release.wait()
        return "250 Message accepted"

    async def wait_until(self, predicate: Callable[[SmtpSink], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), EVENT_TIMEOUT)

    def by_key(self) -> dict[str, list[EmailMessage]]:
        found: dict[str, list[EmailMessage]] = {}
        for message in self.messages:
            found.setdefault(str(message[IDEMPOTENCY_HEADER]), []).append(message)
        return found

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


class RecordingIntent:
    """A `SendIntent` that keeps, in order, what a channel recorded through it.

    ``refuse`` makes `commit` raise it, as a claim that was taken over does.
    """

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.events: list[tuple[str, ...]] = []
        self._refuse = refuse

    async def commit(self, channel: str, reference: str) -> None:
        if self._refuse is not None:
            raise self._refuse
        self.events.append(("commit", channel, reference))

    async def withdraw(self) -> None:
        self.events.append(("withdraw",))


class LogEvents:
    """A structlog processor that counts events by name, so a test can wait for one.

    Waiting is on a future the processor resolves — no polling — and works for
    events logged from other threads too.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: events by name, and (name, field) -> the sum of that whole-number field
        self.counts: collections.Counter[str | tuple[str, str]] = collections.Counter()
        self._loop = loop
        self._waiting: list[tuple[str | tuple[str, str], int, asyncio.Future[None]]] = []

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> NoReturn:
        name = str(event_dict.get("event"))
        self.counts[name] += 1
        for field_name, value in event_dict.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self.counts[name, field_name] += value
        for what, count, future in self._waiting:
            if self.counts[what] >= count:
                self._loop.call_soon_threadsafe(_resolve, future)
        raise structlog.DropEvent

    async def wait_for(self, event: str, count: int = 1, *, summing: str = "") -> None:
        """Return once ``event`` has been logged ``count`` times in all — or, with
        ``summing``, once that field of it adds up to ``count`` over every time it was
        logged (``wait_for(SETTLED_LINE, 8, summing="sent_email")``: eight e-mails sent)."""
        what: str | tuple[str, str] = (event, summing) if summing else event
        if self.counts[what] >= count:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append((what, count, future))
        await asyncio.wait_for(future, EVENT_TIMEOUT)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SmsGateway:
    """A JSON-over-HTTP SMS gateway that records what it is asked to send."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.url = ""

    async def send(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._changed:
            self.requests.append(body)
            self._changed.notify_all()
        return web.json_response({"id": f"gw-{len(self.requests)}"})


@dataclass
class Harness:
    """One test's notifier world; everything it starts is stopped at teardown."""

    root: Path
    nats: NatsServer
    pki: DevPki
    operator: keys.OperatorKeyFiles
    smtp: SmtpSink
    sms: SmsGateway
    tenants_file: Path
    outbox: Path
    nc: NatsClient
    js: JetStreamContext
    ledger: Ledger
    apps: list[NotifierApp] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def config(self, **overrides: Any) -> NotifierConfig:
        values: dict[str, Any] = {
            "notifier_secret_key": self.operator.notifier_secret_key,
            "tenants_file": self.tenants_file,
            "channels": ChannelsConfig(
                smtp=SmtpConfig(
                    host="127.0.0.1",
                    port=self.smtp.port,
                    from_address="noreply@rigshospitalet.example.dk",
                    starttls=StartTls.OFF,
                    timeout_seconds=10,
                ),
                sms=SmsGatewayConfig(url=self.sms.url, timeout_seconds=10),
                digital_post=DigitalPostConfig(outbox=self.outbox),
            ),
            "tls_dir": self.pki.service_dir("notifier"),
            "nats_url": self.nats.url,
            "verify_key": self.operator.verify_key,
            "grpc_addr": "127.0.0.1:0",
            "health_addr": "127.0.0.1:0",
            "metrics_addr": None,
            "workers_per_process": 2,
            "max_deliver": 3,
            "ack_wait": 3.0,
            "backoff": (0.2,),
            "drain_seconds": 10.0,
            "replay_timeout": 10.0,
        }
        values.update(overrides)
        return NotifierConfig(**values)

    async def start_app(self, *, intake: bool = True, **overrides: Any) -> NotifierApp:
        app = NotifierApp(self.config(**overrides), intake=intake)
        await app.start()
        self.apps.append(app)
        return app

    def stub(self, app: NotifierApp, tls_dir: Path | None = None) -> OutreachAsyncStub:
        files = TlsFiles.from_dir(tls_dir or self.pki.tenant_dir(HOSPITAL))
        channel = grpc.aio.secure_channel(f"localhost:{app.port}", channel_credentials(files))
        self.channels.append(channel)
        return outreach_pb2_grpc.OutreachStub(channel)

    def seal(self, contact: ContactDetails) -> bytes:
        public = keys.load_sealing_public_key(self.operator.notifier_public_key)
        return bytes(nacl.public.SealedBox(public).encrypt(contact.SerializeToString()))

    def item(
        self,
        patient: Patient,
        breach_id: str,
        key: str | None = None,
        contact: ContactDetails | None = None,
    ) -> OutreachItem:
        """The item the SDK would send for ``patient`` (or for another ``contact``)."""
        return OutreachItem(
            patient_ref=patient.opaque_ref,
            breach_id=breach_id,
            idempotency_key=key or f"k-{patient.ref}-{breach_id}",
            sealed_contact=self.seal(contact or patient.contact()),
        )

    async def queue_notices(
        self, breach_id: str, leaked: Iterable[Patient], patients: Iterable[Patient]
    ) -> list[str]:
        """Publish the breach of ``leaked`` and queue a notice per patient through an
        intake-only notifier (no worker yet), so a test starts its workers itself;
        the notices' idempotency keys."""
        await self.publish_breach(breach_id, leaked)
        intake = await self.start_app(workers_per_process=0)
        items = [self.item(patient, breach_id) for patient in patients]
        response = await self.stub(intake).SubmitOutreach(
            SubmitOutreachRequest(items=items), timeout=20
        )
        assert all(receipt.accepted for receipt in response.receipts)
        return [item.idempotency_key for item in items]

    async def publish_breach(
        self,
        breach_id: str,
        members: Iterable[Patient] = (),
        *,
        title: str = "Alles Lægehus-lækket",
        organisation: str = "Alles Lægehus ApS",
        version: int = 1,
        descriptions: Mapping[str, str] = DESCRIPTIONS,
        proof_index: bool = True,
    ) -> breach_pb2.BreachEvent:
        """Publish a signed breach whose filter holds ``members``' tokens and labels; the event.

        Body and proof index go to the object store as ingest stores them;
        without ``proof_index`` the breach looks like one published before
        proof indexes existed.
        """
        people = list(members)
        writer = FilterWriter()
        if people:
            writer.add_batch(
                [patient.token for patient in people],
                [int(Category.from_names(patient.categories)) for patient in people],
            )
        body, proofs = io.BytesIO(), io.BytesIO()
        summary = writer.finish(body, proofs)
        manifest = Manifest.for_body(
            summary,
            breach_id=breach_id,
            version=version,
            title=title,
            organisation=organisation,
            breach_date=date(2025, 3, 14),
            added_date=date(2025, 3, 20),
            descriptions=dict(descriptions),
            verified=True,
            sensitive=True,
            oprf_key_id="k-test",
        )
        store = await bus.object_store(self.js, bus.OBJ_BREACH_FILTERS)
        await store.put(manifest.body_object, body.getvalue())
        if proof_index:
            await store.put(proof_object_name(manifest), proofs.getvalue())
        event = publication(manifest, self.signing_key)
        await publish_event(self.js, event)
        return event

    async def retract_breach(self, breach_id: str, version: int = 1) -> None:
        await publish_event(self.js, retraction(breach_id, version, self.signing_key))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return keys.load_signing_key(self.operator.signing_key)

    async def settled(
        self, breach_id: str, count: int, tenant: str = HOSPITAL
    ) -> dict[str, LedgerEntry]:
        """Ledger entries by idempotency key, once ``count`` of the breach's are settled."""
        return await self.ledger_when(
            breach_id, lambda latest: sum(e.terminal for e in latest.values()) >= count, tenant
        )

    async def ledger_when(
        self,
        breach_id: str,
        done: Callable[[dict[str, LedgerEntry]], bool],
        tenant: str = HOSPITAL,
    ) -> dict[str, LedgerEntry]:
        """The breach's ledger entries by idempotency key, as soon as ``done`` holds for them."""
        prefix = ".".join(("outreach", bus.tenant_token(tenant), bus.tenant_token(breach_id)))
        kv = await bus.key_value(self.js, bus.KV_OUTREACH_LEDGER)
        watcher = await kv.watch(prefix + ".>")
        latest: dict[str, LedgerEntry] = {}

        async def follow() -> None:
            async for update in watcher:
                if update is not None and update.value:
                    entry = LedgerEntry.from_bytes(update.value)
                    latest[entry.idempotency_key] = entry
                if done(latest):
                    return

        try:
            await asyncio.wait_for(follow(), SETTLE_TIMEOUT)
        finally:
            await watcher.stop()
        return latest

    async def unacknowledged(self) -> int:
        """Requests the workers' consumer has handed out or still holds (0: nothing can return)."""
        info = await self.js.consumer_info(bus.STREAM_OUTREACH, bus.CONSUMER_NOTIFIER_WORKERS)
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    def worker_env(self, **overrides: str | None) -> dict[str, str]:
        """The environment a `breachmatch-notifier worker` subprocess runs with (None: unset)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("BREACHMATCH_") and key != "PYTHONPATH"
        }
        env.update(
            {
                "BREACHMATCH_NATS_URL": self.nats.url,
                "BREACHMATCH_NATS_TLS_DIR": str(self.pki.service_dir("notifier")),
                "BREACHMATCH_NOTIFIER_SECRET_KEY": str(self.operator.notifier_secret_key),
                "BREACHMATCH_TENANTS_FILE": str(self.tenants_file),
                "BREACHMATCH_VERIFY_KEY": str(self.operator.verify_key),
                "BREACHMATCH_HEALTH_ADDR": "",
                "BREACHMATCH_METRICS_ADDR": "off",
                "BREACHMATCH_LOG_FORMAT": "json",
                "BREACHMATCH_SMTP_HOST": "127.0.0.1",
                "BREACHMATCH_SMTP_PORT": str(self.smtp.port),
                "BREACHMATCH_SMTP_STARTTLS": "off",
                "BREACHMATCH_SMTP_FROM": "noreply@rigshospitalet.example.dk",
            }
        )
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    @property
    def notifier_command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "breachmatch-notifier")]


def write_tenants(
    path: Path, *, alert_email: str = "", outreach_daily_limit: int | None = None
) -> Path:
    hospital: dict[str, str | int] = {
        "organisation": ORGANISATION,
        "contact_point": CONTACT_POINT,
        "language": "da",
    }
    if alert_email:
        hospital["alert_email"] = alert_email
    if outreach_daily_limit is not None:
        hospital["outreach_daily_limit"] = outreach_daily_limit
    path.write_text(json.dumps({"tenants": {HOSPITAL: hospital, NO_IDENTITY: {}}}))
    return path


@pytest.fixture
async def log_events() -> AsyncIterator[LogEvents]:
    """The test's structlog events by name (nothing is printed); configuration restored."""
    events = LogEvents(asyncio.get_running_loop())
    saved = structlog.get_config()
    structlog.configure(processors=[events], cache_logger_on_first_use=False)
    try:
        yield events
    finally:
        structlog.configure(**saved)


@pytest.fixture(scope="session")
def notifier_pki(tmp_path_factory: pytest.TempPathFactory, dev_pki: DevPki) -> DevPki:
    directory = tmp_path_factory.mktemp("notifier-pki")
    return make_dev_pki(directory, (HOSPITAL, NO_IDENTITY, UNKNOWN), ca=dev_pki)


@pytest.fixture(scope="session")
def operator_keys(tmp_path_factory: pytest.TempPathFactory) -> keys.OperatorKeyFiles:
    return keys.make_operator_keys(tmp_path_factory.mktemp("operator-keys"))


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.example", ident="test sink"), "127.0.0.1", 0
    )
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        sink.release.set()
        server.close()


@pytest.fixture
async def sms_gateway() -> AsyncIterator[SmsGateway]:
    gateway = SmsGateway()
    application = web.Application()
    application.router.add_post("/sms", gateway.send)
    server = TestServer(application, host="127.0.0.1", port=0)
    await server.start_server()
    gateway.url = str(server.make_url("/sms"))
    try:
        yield gateway
    finally:
        await server.close()


@pytest.fixture
async def harness(
    tmp_path: Path,
    fresh_nats_server: NatsServer,
    notifier_pki: DevPki,
    operator_keys: keys.OperatorKeyFiles,
    smtp_sink: SmtpSink,
    sms_gateway: SmsGateway,
) -> AsyncIterator[Harness]:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    # What ingest's start-up creates (breach events, filter store): the notifier waits for it.
    await fresh_nats_server.provision("ingest")
    nc, js = await fresh_nats_server.connect("admin", "notifier-tests")
    await bus.ensure_streams(js, *bus.STREAMS)
    secret = keys.load_sealing_secret_key(operator_keys.notifier_secret_key)
    ledger = Ledger(await bus.key_value(js, bus.KV_OUTREACH_LEDGER), ref_key_for(secret))
    world = Harness(
        root=tmp_path,
        nats=fresh_nats_server,
        pki=notifier_pki,
        operator=operator_keys,
        smtp=smtp_sink,
        sms=sms_gateway,
        tenants_file=write_tenants(tmp_path / "tenants.json"),
        outbox=outbox,
        nc=nc,
        js=js,
        ledger=ledger,
    )
    try:
        yield world
    finally:
        for channel in world.channels:
            await channel.close(None)
        for app in world.apps:
            await app.stop()
        await nc.close()


async def read_event(call: grpc.aio.UnaryStreamCall[Any, Any]) -> WatchStatusResponse:
    """The next event of a WatchStatus call (failing if the stream ended instead)."""
    event = await call.read()
    assert isinstance(event, WatchStatusResponse)
    return event


def contact_data_in(haystack: bytes, patients: Iterable[Patient]) -> list[str]:
    """The contact values of ``patients`` that occur in ``haystack`` (UTF-8 and UTF-16)."""
    found = []
    for patient in patients:
        for secret in patient.secrets():
            for encoded in (secret.encode("utf-8"), secret.encode("utf-16-le")):
                if encoded in haystack:
                    found.append(secret)
    return found
