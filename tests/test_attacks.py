"""Issue 10's attacks, run against the real stack (`make up`'s), each asserting the refusal.

The stack is `breachmatch_dev.stack` — nats-server with the production NATS
configuration, matcher, notifier and ingest as processes with their own
service certificates — so what is tested is what `make up` runs. Attacks
come from the certificates an attacker could hold: a hospital's, the
operator's, a service's, one from the right CA naming nobody, one from a
foreign CA, an expired one, and none at all.

Each refusal is checked where it happens *and* by its effect: a denied publish
leaves the stream as it was, a denied budget write leaves the budget as it was.

Other parts of issue 10 (signed retractions and key statements, the outreach
proof of match, ...) add their attacks to this file.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import nacl.public
import nacl.signing
import nats
import nats.errors
import pytest
from google.protobuf.descriptor import MethodDescriptor
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from breachmatch import bus, keys, oprf, tls, voprf
from breachmatch.authz import is_allowed
from breachmatch.client import CheckResult, Client, Match
from breachmatch.client.audit import SecurityAudit
from breachmatch.client.errors import UntrustedKeyError
from breachmatch.identity import Role
from breachmatch.nats_auth import BACKED_UP_STREAMS
from breachmatch.server import ServerConfig, Service
from breachmatch.statements import KeyPurpose, SignedKeyStatement, verify_statement
from breachmatch.v1 import ingest_pb2, ingest_pb2_grpc, matcher_pb2, matcher_pb2_grpc, outreach_pb2
from breachmatch_dev.nats_server import NatsServer
from breachmatch_dev.rpc_probe import full_name, methods_of, raw_call
from breachmatch_dev.stack import Stack, StackInfo

#: JetStream API calls that the server refuses get no reply: fail fast.
API_TIMEOUT = 1.0
SERVICES = {"matcher": matcher_pb2, "notifier": outreach_pb2, "ingest": ingest_pb2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackInfo, NatsServer]]:
    running = Stack(tmp_path_factory.mktemp("attacks"))
    info = running.up()
    assert running.nats is not None
    try:
        yield info, running.nats
    finally:
        running.down()


def _address(info: StackInfo, service: str) -> str:
    return {
        "matcher": info.matcher_addr,
        "notifier": info.notifier_addr,
        "ingest": info.ingest_addr,
    }[service]


def _caller(info: StackInfo, role: Role) -> Path:
    return {
        Role.HOSPITAL: info.pki.tenant_dir("hospital-b"),
        Role.OPERATOR: info.pki.operator_dir,
        Role.SERVICE: info.pki.service_dir("notifier"),
    }[role]


def _probes() -> list[tuple[str, MethodDescriptor]]:
    return [
        (service, method)
        for service, module in SERVICES.items()
        for method in methods_of(module.DESCRIPTOR)
    ]


# --- gRPC: roles and undecodable requests ------------------------------------------


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(
    ("service", "method"), _probes(), ids=[f"{s}.{m.name}" for s, m in _probes()]
)
async def test_every_method_of_every_service_admits_only_its_roles(
    stack: tuple[StackInfo, NatsServer], service: str, method: MethodDescriptor, role: Role
) -> None:
    """Hospitals get PERMISSION_DENIED on Ingest, the operator on Outreach, services on all;
    an admitted caller's undecodable request is INVALID_ARGUMENT (not UNKNOWN)."""
    info, _ = stack
    code = await raw_call(_address(info, service), _caller(info, role), method)
    if is_allowed(full_name(method), role):
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_undecodable_requests_are_logged_once_with_the_caller_and_no_traceback(
    stack: tuple[StackInfo, NatsServer],
) -> None:
    info, _ = stack
    evaluate = matcher_pb2.DESCRIPTOR.services_by_name["Matcher"].methods_by_name["Evaluate"]
    assert await raw_call(info.matcher_addr, info.tenant_dir, evaluate) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    log = (info.root / "logs" / "matcher.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("event") == "undecodable request refused"]
    assert refused
    assert refused[-1]["tenant"] == "hospital-a"
    assert refused[-1]["method"] == "/breachmatch.v1.Matcher/Evaluate"
    assert "Traceback" not in log
    assert not [line for line in lines if line.get("level") == "error"]


async def test_a_hospital_cannot_upload_or_retract_on_ingest(
    stack: tuple[StackInfo, NatsServer],
) -> None:
    """Attack 1 of issue 10, with well-formed requests: refused before any handler runs."""
    info, nats_server = stack
    nc, js = await nats_server.connect("admin")
    before = (await js.stream_info(bus.STREAM_BREACHES)).state.last_seq
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(info.pki.tenant_dir("hospital-b")))
    async with grpc.aio.secure_channel(info.ingest_addr, credentials) as channel:
        stub: Any = ingest_pb2_grpc.IngestStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as retract:
            await stub.RetractBreach(
                ingest_pb2.RetractBreachRequest(breach_id="any-breach", reason="mine now"),
                timeout=10,
            )
        metadata = ingest_pb2.BreachMetadata(breach_id="forged", title="Forged")
        header = ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(metadata=metadata))
        with pytest.raises(grpc.aio.AioRpcError) as upload:
            await stub.Upload(iter([header, ingest_pb2.UploadRequest(chunk=b"")]), timeout=10)
    assert retract.value.code() == grpc.StatusCode.PERMISSION_DENIED  # not NOT_FOUND
    assert upload.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await js.stream_info(bus.STREAM_BREACHES)).state.last_seq == before
    await nc.close()


@pytest.mark.parametrize("who", ["nameless", "expired", "foreign"])
async def test_certificates_naming_nobody_or_untrusted_are_refused_everywhere(
    stack: tuple[StackInfo, NatsServer], who: str
) -> None:
    info, _ = stack
    directory = {
        "nameless": info.pki.nameless_dir,
        "expired": info.pki.expired_dir,
        "foreign": info.pki.foreign_dir,
    }[who]
    expected = grpc.StatusCode.UNAUTHENTICATED if who == "nameless" else grpc.StatusCode.UNAVAILABLE
    for service, method in _probes():
        assert await raw_call(_address(info, service), directory, method) == expected, method


# --- NATS: no anonymous client, nobody outside their own job -----------------------


#: How long to wait for the server's -ERR for a forbidden publish or subscription.
REFUSAL_TIMEOUT = 5.0


class Refusals:
    """A NATS connection as one service, recording the server's permission errors."""

    nc: NatsClient
    js: JetStreamContext

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.changed = asyncio.Condition()

    async def record(self, error: Exception) -> None:
        async with self.changed:
            self.errors.append(str(error).lower())
            self.changed.notify_all()

    async def _refusal(self, kind: str, subject: str) -> bool:
        """True once the server has refused `kind` on `subject` (False if it never does)."""
        expected = _violation(kind, subject)
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: any(expected in e for e in self.errors)),
                    REFUSAL_TIMEOUT,
                )
            except TimeoutError:
                return False
        return True

    async def publish_refused(self, subject: str, payload: bytes = b"forged") -> bool:
        await self.nc.publish(subject, payload)
        await self.nc.flush()
        return await self._refusal("publish", subject)

    async def subscribe_refused(self, subject: str) -> bool:
        subscription = await self.nc.subscribe(subject)
        await self.nc.flush()
        refused = await self._refusal("subscription", subject)
        await subscription.unsubscribe()
        return refused


@pytest.fixture
async def connect_as(
    stack: tuple[StackInfo, NatsServer],
) -> AsyncIterator[Any]:
    _, nats_server = stack
    opened: list[NatsClient] = []

    async def connect(service: str) -> Refusals:
        refusals = Refusals()
        nc, _ = await nats_server.connect(
            service, f"attacker-{service}", error_cb=refusals.record, allow_reconnect=False
        )
        opened.append(nc)
        refusals.nc, refusals.js = nc, nc.jetstream(timeout=API_TIMEOUT)
        return refusals

    yield connect
    for nc in opened:
        await nc.close()


def _violation(kind: str, subject: str) -> str:
    return f'permissions violation for {kind} to "{subject.lower()}"'


async def _no_connection(url: str, **options: Any) -> Exception:
    with pytest.raises(Exception) as refused:  # noqa: PT011 (the kinds differ by how it fails)
        await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
        )
    return refused.value


async def _plaintext_reply(url: str) -> bytes:
    """What the server answers a client that speaks the NATS protocol without TLS."""
    host, port = url.removeprefix("tls://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = await reader.readline()
        assert b'"tls_required":true' in info
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        return await asyncio.wait_for(reader.read(), API_TIMEOUT * 10)
    finally:
        writer.close()


async def test_nats_refuses_anonymous_plaintext_and_foreign_clients(
    stack: tuple[StackInfo, NatsServer],
) -> None:
    """Attack 3 of issue 10: no credentials, no TLS — now no connection at all."""
    info, _ = stack
    # Plaintext: the server answers no PING, it closes the connection.
    assert b"PONG" not in await _plaintext_reply(info.nats_url)
    # TLS without a client certificate, or with one the CA did not issue or that
    # expired: the handshake fails.
    anonymous = ssl.create_default_context(cafile=str(info.pki.ca_cert))
    untrusted = [anonymous] + [
        bus.client_tls(tls.TlsFiles.from_dir(directory))
        for directory in (info.pki.expired_dir, info.pki.foreign_dir)
    ]
    for context in untrusted:
        error = await _no_connection(info.nats_url, tls=context)
        assert isinstance(error, (ConnectionError, ssl.SSLError)), error
    # Valid certificates of the CA that are not a service's: no NATS user.
    for directory in (
        info.pki.tenant_dir("hospital-a"),  # hospitals have no NATS access at all
        info.pki.operator_dir,  # nor has the operator's gRPC identity
        info.pki.nameless_dir,
    ):
        files = tls.TlsFiles.from_dir(directory)
        error = await _no_connection(info.nats_url, tls=bus.client_tls(files))
        assert "authorization violation" in str(error).lower(), directory


async def test_matcher_cannot_publish_breaches_or_read_outreach(
    stack: tuple[StackInfo, NatsServer], connect_as: Any
) -> None:
    _, nats_server = stack
    admin, admin_js = await nats_server.connect("admin")
    breaches = (await admin_js.stream_info(bus.STREAM_BREACHES)).state.last_seq
    matcher = await connect_as("matcher")
    assert await matcher.publish_refused(bus.BREACH_PUBLISHED)
    assert await matcher.publish_refused(bus.BREACH_RETRACTED)
    outreach = bus.OUTREACH_REQUEST + ".>"
    assert await matcher.subscribe_refused(outreach)
    with pytest.raises(nats.errors.TimeoutError):
        await matcher.js.pull_subscribe(outreach, "stolen", stream=bus.STREAM_OUTREACH)
    assert "permissions violation for publish" in " ".join(matcher.errors)
    assert "$js.api.consumer" in " ".join(matcher.errors)
    # ... and it may not erase its own audit trail or another's stream.
    with pytest.raises(nats.errors.TimeoutError):
        await matcher.js.purge_stream(bus.STREAM_AUDIT)
    with pytest.raises(nats.errors.TimeoutError):
        await matcher.js.delete_stream(bus.STREAM_BREACHES)
    assert (await admin_js.stream_info(bus.STREAM_BREACHES)).state.last_seq == breaches
    await admin.close()


async def test_notifier_cannot_reset_budgets_or_publish_breaches(
    stack: tuple[StackInfo, NatsServer], connect_as: Any
) -> None:
    """Attack 3 of issue 10: a budget reset through KV is refused; the budget stands."""
    _, nats_server = stack
    admin, admin_js = await nats_server.connect("admin")
    budgets = await admin_js.key_value(bus.KV_BUDGETS)
    key = f"budget.attack-{uuid.uuid4().hex[:8]}.{datetime.now(UTC).date().isoformat()}"
    await budgets.put(key, b"999")
    notifier = await connect_as("notifier")
    subject = f"$KV.{bus.KV_BUDGETS}.{key}"
    assert await notifier.publish_refused(subject, b"0")
    assert await notifier.publish_refused(bus.BREACH_PUBLISHED)
    with pytest.raises(nats.errors.TimeoutError):
        await notifier.js.purge_stream(bus.kv_stream(bus.KV_BUDGETS))
    assert (await budgets.get(key)).value == b"999"
    await admin.close()


async def test_ingest_cannot_read_outreach_or_touch_budgets(
    stack: tuple[StackInfo, NatsServer], connect_as: Any
) -> None:
    _, nats_server = stack
    admin, admin_js = await nats_server.connect("admin")
    budgets = await admin_js.key_value(bus.KV_BUDGETS)
    key = f"budget.attack-{uuid.uuid4().hex[:8]}.{datetime.now(UTC).date().isoformat()}"
    await budgets.put(key, b"999")
    ingest = await connect_as("ingest")
    outreach = bus.OUTREACH_REQUEST + ".>"
    assert await ingest.subscribe_refused(outreach)
    with pytest.raises(nats.errors.TimeoutError):
        await ingest.js.subscribe(outreach, stream=bus.STREAM_OUTREACH, ordered_consumer=True)
    with pytest.raises(nats.errors.TimeoutError):
        await ingest.js.stream_info(bus.STREAM_OUTREACH_STATUS)
    subject = f"$KV.{bus.KV_BUDGETS}.{key}"
    assert await ingest.publish_refused(subject, b"0")
    assert await ingest.publish_refused(bus.AUDIT_EVALUATE + ".x")
    assert (await budgets.get(key)).value == b"999"
    await admin.close()


@pytest.mark.parametrize(
    ("service", "victim"), [("matcher", "notifier"), ("notifier", "ingest"), ("ingest", "matcher")]
)
async def test_no_user_can_read_another_users_replies(
    stack: tuple[StackInfo, NatsServer], connect_as: Any, service: str, victim: str
) -> None:
    attacker = await connect_as(service)
    inbox = f"_INBOX_service_{victim}.>"
    assert await attacker.subscribe_refused(inbox)
    assert await attacker.subscribe_refused("_INBOX.>")
    assert await attacker.subscribe_refused(">")


# --- verifiable evaluation and key statements (issue 10 items 4 and 8, issue 13) ----------


async def _key_info(address: str, tls_dir: Path) -> matcher_pb2.GetKeyInfoResponse:
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(tls_dir))
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        reply: matcher_pb2.GetKeyInfoResponse = await stub.GetKeyInfo(
            matcher_pb2.GetKeyInfoRequest(), timeout=30.0
        )
        return reply


async def test_non_canonical_elements_are_refused_by_the_running_matcher(
    stack: tuple[StackInfo, NatsServer],
) -> None:
    """Attack 8: a blinded element with bit 255 set (libsodium would decode it) is refused
    with its index; the same batch without it comes back proven under the stated key."""
    info, _ = stack
    key = await _key_info(info.matcher_addr, info.tenant_dir)
    [served] = [k for k in key.keys if k.key_id == key.current_key_id]
    stated = verify_statement(
        SignedKeyStatement(served.statement.statement, served.statement.signature),
        keys.load_verify_key(Path(info.env["BREACHMATCH_OPERATOR_KEY"])),
        KeyPurpose.OPRF,
        key_id=served.key_id,
    )
    inputs = [f"attack-8:{i}".encode() for i in range(6)]
    blinds, blinded = oprf.blind_batch(inputs)
    crafted = list(blinded)
    crafted[4] = crafted[4][:31] + bytes([crafted[4][31] | 0x80])
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(info.tenant_dir))
    async with grpc.aio.secure_channel(info.matcher_addr, credentials) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)

        async def evaluate(elements: list[bytes]) -> list[matcher_pb2.EvaluateResponse]:
            request = matcher_pb2.EvaluateRequest(key_id=served.key_id, blinded_elements=elements)
            call: Any = stub.Evaluate(iter([request]), timeout=30.0)
            return [reply async for reply in call]

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await evaluate(crafted)
        [reply] = await evaluate(blinded)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "index 4" in (refused.value.details() or "")
    assert "top bit" in (refused.value.details() or "")
    outputs = voprf.finalize_batch(
        stated.public_key, inputs, blinds, blinded, list(reply.evaluated_elements), reply.proof
    )
    assert len(outputs) == len(inputs)


class _FakeMatcher(matcher_pb2_grpc.MatcherServicer):
    """An attacker's matcher: the real key info (fetched with a hospital certificate it
    holds), except that the notifier key is its own, in a statement it signed itself."""

    def __init__(self, real: str, tls_dir: Path) -> None:
        self._real, self._tls_dir = real, tls_dir
        self.sealing = nacl.public.PrivateKey.generate()
        own = keys.notifier_statement(self.sealing.public_key, nacl.signing.SigningKey.generate())
        self._statement = matcher_pb2.SignedKeyStatement(
            statement=own.statement_bytes, signature=own.signature
        )

    async def GetKeyInfo(
        self, request: matcher_pb2.GetKeyInfoRequest, context: Any
    ) -> matcher_pb2.GetKeyInfoResponse:
        reply = await _key_info(self._real, self._tls_dir)
        reply.notifier_key.CopyFrom(self._statement)
        return reply


async def test_a_fake_matchers_notifier_key_is_refused_before_anything_is_sealed(
    stack: tuple[StackInfo, NatsServer], tmp_path: Path
) -> None:
    """Attack 4: a fake matcher serves the real OPRF and operator keys but its own notifier
    key. With the operator key pinned, `notify` refuses before sealing or sending anything."""
    info, _ = stack
    # The other RPCs keep the generated base's UNIMPLEMENTED answers (abstract to the stubs' types).
    fake = _FakeMatcher(info.matcher_addr, info.pki.tenant_dir("hospital-b"))  # type: ignore[abstract]
    service = Service("fake-matcher", ServerConfig("127.0.0.1:0", info.pki.service_dir("matcher")))
    matcher_pb2_grpc.add_MatcherServicer_to_server(fake, service.server)
    await service.start([matcher_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name])
    patients = tmp_path / "patients.csv"
    patients.write_text("patient_id,cpr,email\nP1,0102031234,anna@example.dk\n")
    result = CheckResult(
        tenant="hospital-a", patients_file=str(patients), generated_at="2026-01-01T00:00:00Z",
        patients_checked=1, bad_rows=0, patients_without_keys=0, match_keys=2, evaluations=0,
        matches=(Match("P1", "leak", ("cpr",), "strong", ("national_id",)),),
    )  # fmt: skip
    state = tmp_path / "state"
    client = Client(
        f"localhost:{service.bound_port}", info.tenant_dir, state_dir=state,
        operator_key=info.env["BREACHMATCH_OPERATOR_KEY"], notifier=info.notifier_addr,
    )  # fmt: skip
    try:
        with client, pytest.raises(UntrustedKeyError, match="Nothing was sealed or sent"):
            await asyncio.to_thread(client.notify, result)
    finally:
        await service.drain()
    assert not (state / "submitted.sqlite").exists()
    [event] = SecurityAudit(state / "audit.jsonl").events()
    assert event["event"] == "untrusted_notifier_key"


async def _snapshot(nc: NatsClient, stream: str) -> tuple[dict[str, Any], int, int]:
    """Take a snapshot as `nats stream backup` does: the server's answer, bytes and acks sent.

    The chunks come to our own inbox, each acknowledged on its reply subject
    (the server's flow control); an empty message ends the snapshot.
    """
    inbox = nc.new_inbox()
    chunks = await nc.subscribe(inbox)
    request = json.dumps({"deliver_subject": inbox, "chunk_size": 1024}).encode()
    answer = await nc.request(f"$JS.API.STREAM.SNAPSHOT.{stream}", request, timeout=10)
    size = acks = 0
    async with asyncio.timeout(60):
        while chunk := await chunks.next_msg(timeout=30):
            if not chunk.data:
                break
            size += len(chunk.data)
            if chunk.reply:  # every chunk but the last
                await nc.publish(chunk.reply, b"")
                acks += 1
    await chunks.unsubscribe()
    await nc.flush()
    return json.loads(answer.data), size, acks


async def test_backup_user_takes_snapshots_and_nothing_else(
    stack: tuple[StackInfo, NatsServer], connect_as: Any
) -> None:
    """The JetStream backup job's user: snapshots of the streams worth keeping, and no
    write, purge, delete, restore, consumer or snapshot of anything else."""
    _, nats_server = stack
    admin, admin_js = await nats_server.connect("admin")
    # Incompressible, so its snapshot takes many chunks, each to be acknowledged.
    await admin_js.publish(bus.BREACH_PUBLISHED, os.urandom(64 * 1024))

    async def states() -> dict[str, tuple[int, int]]:
        infos = {s: (await admin_js.stream_info(s)).state for s in BACKED_UP_STREAMS}
        return {s: (state.last_seq, state.messages) for s, state in infos.items()}

    before = await states()
    backup = await connect_as("backup")
    acks = 0
    for stream in BACKED_UP_STREAMS:
        info = await backup.js.stream_info(stream)
        answer, size, acked = await _snapshot(backup.nc, stream)
        assert "error" not in answer, (stream, answer)
        assert answer["state"]["last_seq"] == info.state.last_seq, stream
        assert size > 0, stream
        acks += acked
    assert before[bus.STREAM_BREACHES][1] > 0
    assert acks > 0  # chunks were acknowledged ...
    assert backup.errors == []  # ... and nothing it did was refused

    assert await backup.publish_refused(bus.BREACH_PUBLISHED)
    assert await backup.publish_refused(bus.BREACH_RETRACTED)
    assert await backup.publish_refused(f"$KV.{bus.KV_OUTREACH_LEDGER}.forged", b"sent")
    assert await backup.subscribe_refused(bus.BREACH_EVENTS)
    assert await backup.publish_refused(f"$JS.API.STREAM.RESTORE.{bus.STREAM_BREACHES}", b"{}")
    # Only the streams worth keeping: not the outreach queue's sealed contacts.
    assert await backup.publish_refused(f"$JS.API.STREAM.SNAPSHOT.{bus.STREAM_OUTREACH}", b"{}")
    with pytest.raises(nats.errors.TimeoutError):
        await backup.js.pull_subscribe(bus.BREACH_PUBLISHED, "copy", stream=bus.STREAM_BREACHES)
    with pytest.raises(nats.errors.TimeoutError):
        await backup.js.purge_stream(bus.STREAM_AUDIT)
    with pytest.raises(nats.errors.TimeoutError):
        await backup.js.delete_stream(bus.STREAM_BREACHES)
    assert await states() == before  # nothing written, purged or deleted
    await admin.close()


@pytest.mark.parametrize("service", ["ingest", "matcher", "backup"])
async def test_only_the_notifier_may_read_or_move_the_shared_rate_counters(
    stack: tuple[StackInfo, NatsServer], connect_as: Any, service: str
) -> None:
    """The per-channel counters the notifier replicas share (issue 12): another service
    that reset one would lift the provider's rate limit, so none may write, read or
    purge the bucket — and hospitals have no NATS user at all."""
    info, nats_server = stack
    notifier, notifier_js = await nats_server.connect("notifier")
    rates = await bus.key_value(notifier_js, bus.KV_NOTIFIER_RATES)
    key = f"rate.email.{uuid.uuid4().hex[:8]}"
    await rates.put(key, b"7")
    attacker = await connect_as(service)
    stream = bus.kv_stream(bus.KV_NOTIFIER_RATES)
    subject = f"$KV.{bus.KV_NOTIFIER_RATES}.{key}"
    assert await attacker.publish_refused(subject, b"0")  # reset the counter
    assert await attacker.subscribe_refused(f"$KV.{bus.KV_NOTIFIER_RATES}.>")
    with pytest.raises(nats.errors.TimeoutError):
        await attacker.js.key_value(bus.KV_NOTIFIER_RATES)  # stream info: refused
    with pytest.raises(nats.errors.TimeoutError):
        await attacker.js.get_msg(stream, subject=subject, direct=True)
    with pytest.raises(nats.errors.TimeoutError):
        await attacker.js.purge_stream(stream)
    with pytest.raises(nats.errors.TimeoutError):
        await attacker.js.delete_stream(stream)
    assert (await rates.get(key)).value == b"7"
    hospital = tls.TlsFiles.from_dir(info.pki.tenant_dir("hospital-a"))
    error = await _no_connection(info.nats_url, tls=bus.client_tls(hospital))
    assert "authorization violation" in str(error).lower()
    await notifier.close()
