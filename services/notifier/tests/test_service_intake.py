"""SubmitOutreach and GetStatus over real mTLS: who may submit, what is refused, duplicates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from breachmatch import bus
from breachmatch.authz import is_allowed
from breachmatch.dev.rpc_probe import full_name, methods_of, raw_call
from breachmatch.identity import Role
from breachmatch.v1 import outreach_pb2
from breachmatch.v1.outreach_pb2 import (
    GetStatusRequest,
    OutreachItem,
    OutreachStatus,
    SubmitOutreachRequest,
    WatchStatusRequest,
)

if TYPE_CHECKING:
    from breachmatch.v1.outreach_pb2_grpc import OutreachAsyncStub

from .conftest import HOSPITAL, NO_IDENTITY, UNKNOWN, Harness, Patient

BREACH = "alles-2025"
RPC_TIMEOUT = 20.0
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
    assert await queued_so_far(harness) == 0
