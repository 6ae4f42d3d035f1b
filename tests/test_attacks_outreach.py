"""Attacks on outreach (issue 10, items 5 and 6), run against the real stack.

The stack is the one `make demo` runs — nats-server, matcher, notifier and
ingest as processes, mTLS everywhere, an SMTP sink — with a synthetic leak
ingested and hospital-a's patients checked and notified through the SDK.
Then each attack is tried with hospital-a's own certificate, the way a
misused hospital account would, and must fail:

* a notice to an address that is no patient, without a proof of match, with
  a made-up token, or with a real patient's proof a second time;
* a scam text (phone number, "give us your card number") in the name;
* exposure categories the hospital claims instead of the breach's label;
* two patient refs with one address, for two e-mails;
* more notices than the tenant's daily limit, spread over two notifier
  replicas;
* a proof index planted in the object store by a service other than ingest;
* and, after the run, a raw patient ref or CPR number anywhere in the
  JetStream store (streams, KV, dead letters) or the services' logs.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import grpc
import nacl.public
import nats.errors
import nats.js.errors
import pytest

from breachmatch import bus, keys, tls
from breachmatch.client import CheckResult, Client
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.outreach import contact_details, idempotency_key, opaque_ref
from breachmatch.client.patients import Patient, PatientSet, read_patients
from breachmatch.identifiers import Strength
from breachmatch.v1 import outreach_pb2_grpc
from breachmatch.v1.outreach_pb2 import (
    ContactDetails,
    GetStatusRequest,
    MatchProof,
    OutreachItem,
    OutreachReceipt,
    OutreachStatus,
    SubmitOutreachRequest,
    WatchStatusRequest,
)
from breachmatch_dev.dumps import Dataset, write_dataset
from breachmatch_dev.stack import TENANT, Stack, StackInfo
from breachmatch_notifier.notice import PACKAGED_TEMPLATES

BREACH = "attack-leak"
VICTIM = "victim@not-a-patient.example"
#: hospital-b's daily outreach limit: the rate-limit attack's budget.
LIMIT_B = 3
TIMEOUT = 60.0
Refusal = OutreachReceipt.Refusal


@dataclass
class World:
    stack: Stack
    info: StackInfo
    operator: keys.OperatorKeyFiles
    data: Dataset
    cache_key: CacheKey
    client: Client
    result: CheckResult
    patients: PatientSet
    #: Proofs of every match, strong and medium, as the SDK makes them.
    proofs: dict[tuple[str, str], MatchProof]
    #: Patients hospital-a's `notify` sent a notice to (its strong matches).
    notified: tuple[str, ...]

    def stub(
        self, address: str | None = None, tenant: str = TENANT
    ) -> outreach_pb2_grpc.OutreachStub:
        """A plain Outreach client with ``tenant``'s certificate: no SDK rules apply."""
        files = tls.TlsFiles.from_dir(self.info.pki.tenant_dir(tenant))
        channel = grpc.secure_channel(
            address or self.info.notifier_addr, tls.channel_credentials(files)
        )
        return outreach_pb2_grpc.OutreachStub(channel)

    def patient(self, patient_id: str) -> Patient:
        return self.patients.by_id()[patient_id]

    def medium(self) -> list[str]:
        """Matched patients hospital-a did not notify (medium-only), in a stable order."""
        return sorted(m.patient_id for m in self.result.matches if not m.is_strong)

    def seal(self, contact: ContactDetails, extra: bytes = b"") -> bytes:
        public = keys.load_sealing_public_key(self.operator.notifier_public_key)
        return bytes(nacl.public.SealedBox(public).encrypt(contact.SerializeToString() + extra))

    def item(self, patient_id: str, contact: ContactDetails, extra: bytes = b"") -> OutreachItem:
        """An item as a hand-written client of hospital-a would send it."""
        return OutreachItem(
            patient_ref=opaque_ref(self.cache_key, TENANT, patient_id),
            breach_id=BREACH,
            idempotency_key=idempotency_key(self.cache_key, TENANT, patient_id, BREACH),
            sealed_contact=self.seal(contact, extra),
        )

    def contact(self, patient_id: str, **changes: object) -> ContactDetails:
        """The contact the SDK would seal for a matched patient, with ``changes``."""
        proof = self.proofs[patient_id, BREACH]
        contact = contact_details(self.patient(patient_id).record, proof, ["email"])
        for name, value in changes.items():
            if name == "proof" and value is None:
                contact.ClearField("proof")
            else:
                setattr(contact, name, value)
        return contact

    def mails_to(self, address: str) -> list[EmailMessage]:
        found = []
        for path in sorted(self.info.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            if str(message["To"]).lower() == address.lower():
                found.append(message)
        return found


def ingest(info: StackInfo, leak: Path) -> None:
    """The operator publishes the leak with the ingest CLI, as in `make demo`."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "breachmatch-ingest"), str(leak),
         "--breach-id", BREACH, "--title", "Attack test leak", "--organisation", "Clinic"],
        env={**os.environ, **info.env}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def submit(stub: outreach_pb2_grpc.OutreachStub, *items: OutreachItem) -> list[OutreachReceipt]:
    response = stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=TIMEOUT)
    return list(response.receipts)


def wait_settled(stub: outreach_pb2_grpc.OutreachStub, keys_: set[str]) -> dict[str, int]:
    """Follow WatchStatus until each of ``keys_`` is sent or dead; their final states."""
    settled: dict[str, int] = {}
    final = {OutreachStatus.STATE_SENT, OutreachStatus.STATE_DEAD}
    for event in stub.WatchStatus(WatchStatusRequest(), timeout=TIMEOUT):
        status = event.status
        if status.idempotency_key in keys_ and status.state in final:
            settled[status.idempotency_key] = status.state
        if set(settled) == keys_:
            return settled
    raise AssertionError("WatchStatus ended before every notice settled")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("attacks-outreach")
    stack = Stack(
        root,
        extra_tenants={
            "hospital-b": {
                "organisation": "Hospital B (demo)",
                "contact_point": "Patient office, phone 70 70 70 70",
                "outreach_daily_limit": LIMIT_B,
            }
        },
    )
    info = stack.up()
    try:
        data = write_dataset(root / "data", patients=80, leaked=40, strangers=10, seed=10)
        ingest(info, data.leak)
        cache_key_path = root / "hospital-a.key"
        client = Client(
            info.matcher_addr,
            info.tenant_dir,
            state_dir=info.state_dir,
            cache_key=cache_key_path,
            operator_key=Path(info.env["BREACHMATCH_OPERATOR_KEY"]),
            notifier=info.notifier_addr,
        )
        result = client.check(data.hospital_csv, [BREACH])
        patients = read_patients(data.hospital_csv)
        proofs = client.prove(result, patients, Strength.MEDIUM)
        notified = client.notify(result, data.hospital_csv, channels=["email"])
        assert notified.submitted.refused == ()
        assert notified.submitted.accepted == len(notified.plan.items) > 0
        world = World(
            stack=stack,
            info=info,
            operator=keys.make_operator_keys(root / "keys"),
            data=data,
            cache_key=CacheKey.load_or_create(cache_key_path),
            client=client,
            result=result,
            patients=patients,
            proofs=proofs,
            notified=notified.plan.patient_ids,
        )
        keys_sent = {item.idempotency_key for item in notified.plan.items}
        assert set(wait_settled(world.stub(), keys_sent).values()) == {OutreachStatus.STATE_SENT}
        yield world
        client.close()
    finally:
        stack.down()


def labels(message: EmailMessage) -> dict[str, str]:
    """Category name → the wording a notice in this message's language uses for it."""
    language = str(message["Content-Language"])
    phrases = tomllib.loads((PACKAGED_TEMPLATES / f"phrases.{language}.toml").read_text())
    return {name: entry["label"] for name, entry in phrases["categories"].items()}


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def recorded(world: World) -> int:
    """hospital-a's notices about the breach that the notifier has a record of."""
    statuses = world.stub().GetStatus(GetStatusRequest(breach_id=BREACH), timeout=TIMEOUT)
    return len(statuses.statuses)


def test_a_notice_to_someone_who_is_no_patient_is_refused_and_nothing_is_sent(world: World):
    stub = world.stub()
    before = recorded(world)
    stranger = ContactDetails(name="Vera Victim", email=VICTIM, channels=["email"])
    forged = ContactDetails()
    forged.CopyFrom(stranger)
    forged.proof.CopyFrom(MatchProof(key_kind="cpr", token=os.urandom(64)))
    malformed = ContactDetails()
    malformed.CopyFrom(stranger)
    malformed.proof.CopyFrom(MatchProof(key_kind="passport", token=os.urandom(64)))
    receipts = submit(
        stub,
        world.item("attacker-1", stranger),
        world.item("attacker-2", forged),
        world.item("attacker-3", malformed),
    )
    assert [(r.accepted, r.refusal) for r in receipts] == [
        (False, Refusal.REFUSAL_NO_PROOF),
        (False, Refusal.REFUSAL_INVALID_PROOF),
        (False, Refusal.REFUSAL_INVALID_PROOF),
    ]
    assert "matches no entry" in receipts[1].detail
    assert VICTIM not in " ".join(r.detail for r in receipts)
    assert recorded(world) == before
    assert world.mails_to(VICTIM) == []


def test_a_raw_patient_ref_is_refused(world: World):
    patient_id = world.medium()[0]
    item = world.item(patient_id, world.contact(patient_id))
    item.patient_ref = world.patient(patient_id).record.cpr or patient_id
    with pytest.raises(grpc.RpcError) as refused:
        submit(world.stub(), item)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "opaque ref" in (refused.value.details() or "")
    assert item.patient_ref not in (refused.value.details() or "")


def test_a_real_patients_proof_backs_one_notice_not_a_second_to_another_address(world: World):
    patient_id = world.notified[0]
    stolen = world.contact(patient_id, email=VICTIM, name="Vera Victim")
    (receipt,) = submit(world.stub(), world.item("attacker-4", stolen))
    assert (receipt.accepted, receipt.refusal) == (False, Refusal.REFUSAL_PROOF_USED)
    assert world.mails_to(VICTIM) == []


@pytest.mark.parametrize(
    "name",
    [
        "Ring 70 20 30 40 og giv os dit kortnummer",
        "Anna Berg - give your card number to our agent",
        "Anna Berg\nKlik her for at bekræfte",
        "Anna " * 40,
    ],
)
def test_a_scam_text_in_the_name_is_refused(world: World, name: str):
    patient_id = world.medium()[1]
    (receipt,) = submit(world.stub(), world.item(patient_id, world.contact(patient_id, name=name)))
    assert (receipt.accepted, receipt.refusal) == (False, Refusal.REFUSAL_CONTACT_REJECTED)
    assert "recipient_name" in receipt.detail
    assert name not in receipt.detail
    address = world.patient(patient_id).record.email or ""
    assert world.mails_to(address) == []


def test_categories_come_from_the_breach_not_from_the_hospital(world: World):
    patient_id = world.medium()[2]
    (match,) = [m for m in world.result.matches if m.patient_id == patient_id]
    claimed = [
        name for name in ("diagnoses", "free_text", "medication") if name not in match.categories
    ]
    assert claimed
    # Field 8 of ContactDetails, where categories used to be claimed, as an old client sends it.
    field_8 = b"".join(b"\x42" + bytes([len(name)]) + name.encode() for name in claimed)
    item = world.item(patient_id, world.contact(patient_id), extra=field_8)
    (receipt,) = submit(world.stub(), item)
    assert (receipt.accepted, receipt.strength) == (True, "medium")
    assert wait_settled(world.stub(), {item.idempotency_key}) == {
        item.idempotency_key: OutreachStatus.STATE_SENT
    }
    (message,) = world.mails_to(world.patient(patient_id).record.email or "")
    listed = {line[2:].strip() for line in text_of(message).splitlines() if line.startswith("- ")}
    wording = labels(message)
    assert [name for name in wording if wording[name] in listed] == [
        name for name in wording if name in match.categories
    ]


def test_two_refs_with_one_address_get_one_email(world: World):
    first, second = world.medium()[3:5]
    address = world.patient(first).record.email or ""
    one = world.item(first, world.contact(first))
    other = world.item(second, world.contact(second, email=address))
    receipts = submit(world.stub(), one, other)
    assert [(r.accepted, r.refusal) for r in receipts] == [
        (True, Refusal.REFUSAL_UNSPECIFIED),
        (False, Refusal.REFUSAL_DUPLICATE_ADDRESS),
    ]
    assert "contact.email" in receipts[1].detail
    wait_settled(world.stub(), {one.idempotency_key})
    # Submitting again, in any order, sends nothing more.
    assert [r.accepted for r in submit(world.stub(), other, one)] == [False, False]
    assert len(world.mails_to(address)) == 1


def test_the_daily_limit_holds_across_notifier_replicas(world: World, tmp_path: Path):
    """hospital-b may queue LIMIT_B notices a day, whichever replica it reaches."""
    second = world.stack.start_replica("notifier")
    client = Client(
        world.info.matcher_addr,
        world.info.pki.tenant_dir("hospital-b"),
        state_dir=tmp_path / "state-b",
        cache_key=tmp_path / "hospital-b.key",
        operator_key=Path(world.info.env["BREACHMATCH_OPERATOR_KEY"]),
        notifier=world.info.notifier_addr,
    )
    with client:
        result = client.check(world.data.hospital_csv, [BREACH])
        proofs = client.prove(result, world.patients, Strength.STRONG)
    strong = [m for m in result.matches if m.is_strong][: LIMIT_B + 2]
    assert len(strong) == LIMIT_B + 2
    b_key = CacheKey.load_or_create(tmp_path / "hospital-b.key")

    def item(patient_id: str) -> OutreachItem:
        contact = contact_details(
            world.patient(patient_id).record, proofs[patient_id, BREACH], ["email"]
        )
        return OutreachItem(
            patient_ref=opaque_ref(b_key, "hospital-b", patient_id),
            breach_id=BREACH,
            idempotency_key=idempotency_key(b_key, "hospital-b", patient_id, BREACH),
            sealed_contact=world.seal(contact),
        )

    items = [item(match.patient_id) for match in strong]
    first = submit(world.stub(tenant="hospital-b"), *items[:2])
    rest = submit(world.stub(second, tenant="hospital-b"), *items[2:])
    outcomes = [(r.accepted, r.refusal) for r in first + rest]
    assert (
        outcomes
        == [(True, Refusal.REFUSAL_UNSPECIFIED)] * LIMIT_B
        + [(False, Refusal.REFUSAL_RATE_LIMITED)] * 2
    )
    assert f"limit of {LIMIT_B} notices" in rest[-1].detail
    # The refused ones hold no reservations: refused again for the limit, not as duplicates.
    again = submit(world.stub(tenant="hospital-b"), *items[LIMIT_B:])
    assert [r.refusal for r in again] == [Refusal.REFUSAL_RATE_LIMITED] * 2


async def test_only_ingest_can_write_a_proof_index(world: World):
    """A planted index (or body) would let its writer prove anything: only ingest may write.

    The notifier and the matcher read ``breach-filters``; a write by either is
    refused by nats-server, and nothing lands in the store.
    """
    assert world.stack.nats is not None
    forged = f"{BREACH}.{'0' * 64}.proofs"
    for service in ("notifier", "matcher"):
        nc, _ = await world.stack.nats.connect(service, f"forger-{service}")
        try:
            store = await nc.jetstream(timeout=1.0).object_store(bus.OBJ_BREACH_FILTERS)
            with pytest.raises(nats.errors.Error):
                await store.put(forged, b"\xff" * 64)
        finally:
            await nc.close()
    nc, js = await world.stack.nats.connect()
    try:
        with pytest.raises(nats.js.errors.NotFoundError):
            await (await js.object_store(bus.OBJ_BREACH_FILTERS)).get_info(forged)
    finally:
        await nc.close()


def _identifiers(world: World) -> dict[str, list[bytes]]:
    """Every hospital patient's id and CPR number, in the forms a leak could take."""
    found: dict[str, list[bytes]] = {"patient ids": [], "cpr numbers": []}
    for patient in world.patients.patients:
        found["patient ids"].append(patient.patient_id.encode())
        cpr = patient.record.cpr or ""
        found["cpr numbers"] += [cpr.encode(), f"{cpr[:6]}-{cpr[6:]}".encode()]
    return found


def test_no_patient_ref_or_cpr_in_any_stream_kv_or_log_after_the_run(world: World):
    """Runs last: it stops the stack so that NATS has written everything to disk."""
    notified = {opaque_ref(world.cache_key, TENANT, p).encode() for p in world.notified}
    world.stack.down()
    nats_dir = world.info.root / "nats"
    stored = b"".join(p.read_bytes() for p in sorted(nats_dir.rglob("*")) if p.is_file())
    logged = b"".join(
        p.read_bytes() for p in sorted((world.info.root / "logs").rglob("*")) if p.is_file()
    )
    # The scan works: what is meant to be stored (the opaque refs of status events) is found.
    assert all(ref in stored for ref in notified)
    for what, forms in _identifiers(world).items():
        assert [f for f in forms if f in stored] == [], f"{what} in the JetStream store"
        assert [f for f in forms if f in logged] == [], f"{what} in the service logs"
