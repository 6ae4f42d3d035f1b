"""SubmitOutreach and GetStatus over real mTLS: who may submit, what is refused, duplicates.

Refused per item: no or an invalid proof of match, a scam-shaped name, an
unreadable contact, an address or proven entry that already backs a notice,
the tenant's daily limit (shared by every replica). Refused whole: malformed
batches, unknown or retracted breaches and breaches without a proof index.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from breachmatch import bus, refusals
from breachmatch.authz import is_allowed
from breachmatch.identity import Role
from breachmatch.v1 import outreach_pb2
from breachmatch.v1.outreach_pb2 import (
    GetStatusRequest,
    OutreachItem,
    OutreachReceipt,
    OutreachStatus,
    SubmitOutreachRequest,
    WatchStatusRequest,
)
from breachmatch_dev.rpc_probe import full_name, methods_of, raw_call

if TYPE_CHECKING:
    from breachmatch.v1.outreach_pb2_grpc import OutreachAsyncStub

from .conftest import (
    HOSPITAL,
    NO_IDENTITY,
    UNKNOWN,
    Harness,
    Patient,
    opaque_ref,
    write_tenants,
)

BREACH = "alles-2025"
RPC_TIMEOUT = 20.0
Refusal = OutreachReceipt.Refusal
PATIENTS = [
    Patient(ref=f"P-{n}", name=f"Testperson {chr(65 + n)}", email=f"person{n}@example.dk")
    for n in range(1, 5)
]


async def queued_so_far(harness: Harness) -> int:
    """How many requests were ever put on the work queue."""
    return int((await harness.js.stream_info(bus.STREAM_OUTREACH)).state.last_seq)


async def submit(stub: OutreachAsyncStub, items: list[OutreachItem]) -> list[bool]:
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT)
    return [receipt.accepted for receipt in response.receipts]


async def test_tenants_not_configured_for_outreach_are_refused(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    app = await harness.start_app(workers_per_process=0)
    items = [harness.item(PATIENTS[0], BREACH)]
    for tenant, code in (
        (UNKNOWN, grpc.StatusCode.PERMISSION_DENIED),
        (NO_IDENTITY, grpc.StatusCode.FAILED_PRECONDITION),
    ):
        stub = harness.stub(app, harness.pki.tenant_dir(tenant))
        with pytest.raises(grpc.aio.AioRpcError) as submitted:
            await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT)
        assert submitted.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as asked:
            await stub.GetStatus(GetStatusRequest(), timeout=RPC_TIMEOUT)
        assert asked.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in stub.WatchStatus(WatchStatusRequest(), timeout=RPC_TIMEOUT):
                pass
        assert watched.value.code() == code
    assert await queued_so_far(harness) == 0
    assert await harness.ledger.entries(UNKNOWN) == []


@pytest.mark.parametrize("which", ["expired", "foreign"])
async def test_expired_and_foreign_certificates_never_reach_the_service(
    harness: Harness, which: str
) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    app = await harness.start_app(workers_per_process=0)
    tls_dir = harness.pki.expired_dir if which == "expired" else harness.pki.foreign_dir
    stub = harness.stub(app, tls_dir)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SubmitOutreach(
            SubmitOutreachRequest(items=[harness.item(PATIENTS[0], BREACH)]), timeout=RPC_TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await queued_so_far(harness) == 0


async def test_malformed_batches_are_refused_whole(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    await harness.publish_breach("withdrawn-2025", PATIENTS)
    await harness.retract_breach("withdrawn-2025")
    app = await harness.start_app(workers_per_process=0, max_batch=3)
    stub = harness.stub(app)
    good = harness.item(PATIENTS[0], BREACH)

    def variant(**changes: object) -> OutreachItem:
        item = OutreachItem()
        item.CopyFrom(good)
        for name, value in changes.items():
            setattr(item, name, value)
        return item

    cases = [
        ([good] * 4, grpc.StatusCode.INVALID_ARGUMENT, "at most 3 items"),
        ([good, variant(patient_ref="")], grpc.StatusCode.INVALID_ARGUMENT, "items[1].patient_ref"),
        ([variant(patient_ref="P-1")], grpc.StatusCode.INVALID_ARGUMENT, "opaque ref"),
        ([variant(patient_ref="0101901234")], grpc.StatusCode.INVALID_ARGUMENT, "opaque ref"),
        ([variant(idempotency_key="has space")], grpc.StatusCode.INVALID_ARGUMENT, "items[0]"),
        ([variant(idempotency_key="tab\there")], grpc.StatusCode.INVALID_ARGUMENT, "printable"),
        ([variant(idempotency_key="kø")], grpc.StatusCode.INVALID_ARGUMENT, "printable ASCII"),
        ([variant(idempotency_key="end\n")], grpc.StatusCode.INVALID_ARGUMENT, "printable"),
        ([variant(idempotency_key="k" * 201)], grpc.StatusCode.INVALID_ARGUMENT, "1 to 200"),
        ([variant(sealed_contact=b"x" * 48)], grpc.StatusCode.INVALID_ARGUMENT, "sealed_contact"),
        (
            [variant(sealed_contact=b"x" * 9000)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "sealed_contact",
        ),
        (
            [good, variant(patient_ref=PATIENTS[1].opaque_ref)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "items[1].idempotency_key: already used",
        ),
        ([variant(breach_id="no-such-breach")], grpc.StatusCode.NOT_FOUND, "not published"),
        ([variant(breach_id="withdrawn-2025")], grpc.StatusCode.FAILED_PRECONDITION, "retracted"),
    ]
    for items, code, says in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT)
        assert refused.value.code() == code
        assert says in (refused.value.details() or "")
    assert await queued_so_far(harness) == 0
    assert await harness.ledger.entries(HOSPITAL) == []


async def test_duplicate_submissions_send_nothing_twice(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    app = await harness.start_app()
    stub = harness.stub(app)
    first = [harness.item(patient, BREACH) for patient in PATIENTS[:3]]
    assert await submit(stub, first) == [True, True, True]
    await harness.settled(BREACH, 3)

    # The same items again, and the same patients and breach under new idempotency keys.
    assert await submit(stub, first) == [False, False, False]
    renamed = [harness.item(patient, BREACH, f"new-{patient.ref}") for patient in PATIENTS[:3]]
    assert await submit(stub, renamed) == [False, False, False]
    # One patient twice in one batch: the first item counts.
    twice = [
        harness.item(PATIENTS[3], BREACH, "fourth-a"),
        harness.item(PATIENTS[3], BREACH, "fourth-b"),
    ]
    assert await submit(stub, twice) == [True, False]
    assert await queued_so_far(harness) == 4  # only the fourth patient was queued again

    await harness.settled(BREACH, 4)
    delivered = harness.smtp.by_key()
    assert sorted(delivered) == sorted([item.idempotency_key for item in first] + ["fourth-a"])
    assert all(len(copies) == 1 for copies in delivered.values())
    assert sorted(message["To"] for message in harness.smtp.messages) == sorted(
        patient.email for patient in PATIENTS
    )


async def test_get_status_reads_the_callers_ledger_entries(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    await harness.publish_breach("other-2025", PATIENTS)
    app = await harness.start_app()
    stub = harness.stub(app)
    items = [harness.item(patient, BREACH) for patient in PATIENTS[:2]]
    items.append(harness.item(PATIENTS[2], "other-2025"))
    assert await submit(stub, items) == [True, True, True]
    await harness.settled(BREACH, 2)
    await harness.settled("other-2025", 1)

    everything = await stub.GetStatus(GetStatusRequest(), timeout=RPC_TIMEOUT)
    assert len(everything.statuses) == 3
    assert {status.tenant for status in everything.statuses} == {HOSPITAL}
    assert all(status.state == OutreachStatus.STATE_SENT for status in everything.statuses)
    assert all(status.channel == "email" for status in everything.statuses)
    # The ledger keeps no patient refs, so statuses from it name items by key only.
    assert all(status.patient_ref == "" for status in everything.statuses)

    by_breach = await stub.GetStatus(GetStatusRequest(breach_id=BREACH), timeout=RPC_TIMEOUT)
    assert sorted(status.idempotency_key for status in by_breach.statuses) == sorted(
        item.idempotency_key for item in items[:2]
    )
    by_key = await stub.GetStatus(
        GetStatusRequest(idempotency_keys=[items[2].idempotency_key]), timeout=RPC_TIMEOUT
    )
    assert [status.breach_id for status in by_key.statuses] == ["other-2025"]


async def test_each_method_admits_exactly_its_roles(harness: Harness) -> None:
    """Undecodable bytes as probe: a denied role gets PERMISSION_DENIED, an allowed one
    INVALID_ARGUMENT (admitted, then refused when the request is decoded).

    Nothing reaches the queue either way; operator and service certificates
    (the ingest service's, the matcher's) are refused on every method.
    """
    app = await harness.start_app(workers_per_process=0)
    callers = {
        Role.HOSPITAL: harness.pki.tenant_dir(HOSPITAL),
        Role.OPERATOR: harness.pki.operator_dir,
        Role.SERVICE: harness.pki.service_dir("matcher"),
    }
    seen = {}
    for method in methods_of(outreach_pb2.DESCRIPTOR):
        for role, directory in callers.items():
            seen[method.name, role] = await raw_call(f"localhost:{app.port}", directory, method)
    expected = {
        (method.name, role): grpc.StatusCode.INVALID_ARGUMENT
        if is_allowed(full_name(method), role)
        else grpc.StatusCode.PERMISSION_DENIED
        for method in methods_of(outreach_pb2.DESCRIPTOR)
        for role in callers
    }
    assert seen == expected
    assert sum(code == grpc.StatusCode.PERMISSION_DENIED for code in seen.values()) == 6


async def test_items_without_a_valid_proof_or_with_a_scam_name_are_refused_one_by_one(
    harness: Harness,
) -> None:
    await harness.publish_breach(BREACH, PATIENTS[:2])
    app = await harness.start_app()
    stub = harness.stub(app)
    outsider = Patient(ref="P-out", name="Otto Outsider", email="otto@example.dk")
    no_proof = PATIENTS[1].contact()
    no_proof.ClearField("proof")
    short_token = PATIENTS[1].contact()
    short_token.proof.token = PATIENTS[1].token[:32]
    scam = replace(PATIENTS[1], name="Giv os dit kortnummer")
    items = [
        harness.item(PATIENTS[0], BREACH),
        harness.item(outsider, BREACH),  # a proof, but of nobody in the breach
        harness.item(PATIENTS[1], BREACH, "k-no-proof", contact=no_proof),
        harness.item(PATIENTS[1], BREACH, "k-short", contact=short_token),
        harness.item(scam, BREACH, "k-scam"),
        OutreachItem(
            patient_ref=opaque_ref("P-garbage"),
            breach_id=BREACH,
            idempotency_key="k-garbage",
            sealed_contact=os.urandom(100),
        ),
    ]
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT)
    refused = [(r.accepted, Refusal.Name(r.refusal)) for r in response.receipts]
    assert refused == [
        (True, "REFUSAL_UNSPECIFIED"),
        (False, "REFUSAL_INVALID_PROOF"),
        (False, "REFUSAL_NO_PROOF"),
        (False, "REFUSAL_INVALID_PROOF"),
        (False, "REFUSAL_CONTACT_REJECTED"),
        (False, "REFUSAL_UNREADABLE_CONTACT"),
    ]
    details = [receipt.detail for receipt in response.receipts]
    assert details[2] == "items[2].contact.proof: missing; every notice needs one"
    assert details[4].startswith("items[4].contact.recipient_name: ")
    assert "kortnummer" not in details[4]
    assert response.receipts[0].strength == "strong"
    # Only the first item was recorded and queued; the refused ones left nothing behind.
    assert await queued_so_far(harness) == 1
    (entry,) = await harness.ledger.entries(HOSPITAL)
    assert entry.idempotency_key == items[0].idempotency_key
    await harness.settled(BREACH, 1)
    assert [message["To"] for message in harness.smtp.messages] == [PATIENTS[0].email]


async def test_a_proof_and_an_address_each_back_one_notice_per_breach(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    app = await harness.start_app(workers_per_process=0)
    stub = harness.stub(app)
    # The same address under another ref, and the same proof under another ref and address.
    same_address = replace(PATIENTS[1], email=PATIENTS[0].email)
    thief = Patient(ref="P-thief", name="Tim Tyv", email="thief@example.dk")
    stolen_proof = thief.contact()
    stolen_proof.proof.CopyFrom(PATIENTS[0].proof())
    first = [harness.item(PATIENTS[0], BREACH), harness.item(same_address, BREACH)]
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=first), timeout=RPC_TIMEOUT)
    assert [(r.accepted, Refusal.Name(r.refusal)) for r in response.receipts] == [
        (True, "REFUSAL_UNSPECIFIED"),
        (False, "REFUSAL_DUPLICATE_ADDRESS"),  # in one batch, the first item wins
    ]
    later = [
        harness.item(thief, BREACH, contact=stolen_proof),
        harness.item(same_address, BREACH, "k-again"),
    ]
    response = await stub.SubmitOutreach(SubmitOutreachRequest(items=later), timeout=RPC_TIMEOUT)
    assert [Refusal.Name(r.refusal) for r in response.receipts] == [
        "REFUSAL_PROOF_USED",
        "REFUSAL_DUPLICATE_ADDRESS",
    ]
    # With its own address, the second patient goes through: the refusals held nothing.
    assert await submit(stub, [harness.item(PATIENTS[1], BREACH, "k-own")]) == [True]
    assert await queued_so_far(harness) == 2


async def test_the_daily_outreach_limit_is_shared_by_every_replica(harness: Harness) -> None:
    write_tenants(harness.tenants_file, outreach_daily_limit=3)
    await harness.publish_breach(BREACH, PATIENTS)
    first = await harness.start_app(workers_per_process=0)
    second = await harness.start_app(workers_per_process=0)
    items = [harness.item(patient, BREACH) for patient in PATIENTS]
    on_first = await harness.stub(first).SubmitOutreach(
        SubmitOutreachRequest(items=items[:2]), timeout=RPC_TIMEOUT
    )
    on_second = await harness.stub(second).SubmitOutreach(
        SubmitOutreachRequest(items=items[2:]), timeout=RPC_TIMEOUT
    )
    receipts = [*on_first.receipts, *on_second.receipts]
    assert [(r.accepted, Refusal.Name(r.refusal)) for r in receipts] == [
        (True, "REFUSAL_UNSPECIFIED"),
        (True, "REFUSAL_UNSPECIFIED"),
        (True, "REFUSAL_UNSPECIFIED"),
        (False, "REFUSAL_RATE_LIMITED"),
    ]
    assert "limit of 3 notices is reached until" in receipts[3].detail
    assert await queued_so_far(harness) == 3
    # Resubmitting what was accepted costs nothing; the refused one is still refused.
    again = await harness.stub(second).SubmitOutreach(
        SubmitOutreachRequest(items=items), timeout=RPC_TIMEOUT
    )
    assert [Refusal.Name(r.refusal) for r in again.receipts][-1] == "REFUSAL_RATE_LIMITED"
    assert [r.accepted for r in again.receipts] == [False] * 4


async def test_a_breach_published_without_a_proof_index_cannot_be_notified(
    harness: Harness,
) -> None:
    await harness.publish_breach(BREACH, PATIENTS, proof_index=False)
    app = await harness.start_app(workers_per_process=0)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.stub(app).SubmitOutreach(
            SubmitOutreachRequest(items=[harness.item(PATIENTS[0], BREACH)]), timeout=RPC_TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no proof index" in (refused.value.details() or "")
    # The SDK reads why, and sends the other breaches' notices.
    assert refusals.breach_state(refused.value) == refusals.UNPROVABLE
    assert await queued_so_far(harness) == 0
